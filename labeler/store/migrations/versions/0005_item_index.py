"""drop item.project_id's own index: the unique (project_id, external_id) index leads with it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_index('ix_item_project_id')


def downgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.create_index('ix_item_project_id', ['project_id'], unique=False)
