"""review quality: blind items, the suggestion shown, qualification attempts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('qualification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.Column('right', sa.Integer(), nullable=True),
    sa.Column('passed', sa.Boolean(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qualification_user_id'), ['user_id'], unique=False)
    # Batch: SQLite adds a foreign key by rebuilding the table (no other table points at reviewtask).
    with op.batch_alter_table('reviewtask', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blind', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('suggested', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('qualification_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_reviewtask_qualification', 'qualification', ['qualification_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('reviewtask', schema=None) as batch_op:
        batch_op.drop_constraint('fk_reviewtask_qualification', type_='foreignkey')
        for column in ('qualification_id', 'suggested', 'blind'):
            batch_op.drop_column(column)
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qualification_user_id'))
    op.drop_table('qualification')
