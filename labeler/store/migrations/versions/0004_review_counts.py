"""review counts on decisions, skips on review tasks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_decision_queue', ['state', 'review_count', 'item_id'], unique=False)
    with op.batch_alter_table('reviewtask', schema=None) as batch_op:
        batch_op.add_column(sa.Column('skipped_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_reviewtask_open', ['submitted_at', 'expires_at'], unique=False)
    op.execute("UPDATE decision SET review_count = "
               "(SELECT count(*) FROM reviewtask WHERE reviewtask.item_id = decision.item_id)")


def downgrade() -> None:
    with op.batch_alter_table('reviewtask', schema=None) as batch_op:
        batch_op.drop_index('ix_reviewtask_open')
        batch_op.drop_column('skipped_at')
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_queue')
        batch_op.drop_column('review_count')
