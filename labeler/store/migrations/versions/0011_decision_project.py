"""decisions carry their project: the review queue reads one project's open items from one index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
    op.execute('UPDATE decision SET project_id = (SELECT project_id FROM item WHERE item.id = decision.item_id)')
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.alter_column('project_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key('fk_decision_project', 'project', ['project_id'], ['id'])
        batch_op.drop_index('ix_decision_queue')
        batch_op.create_index('ix_decision_queue', ['project_id', 'state', 'review_count', 'item_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_queue')
        batch_op.create_index('ix_decision_queue', ['state', 'review_count', 'item_id'], unique=False)
        batch_op.drop_constraint('fk_decision_project', type_='foreignkey')
        batch_op.drop_column('project_id')
