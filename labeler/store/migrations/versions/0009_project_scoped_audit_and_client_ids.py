"""audit events carry their project; client ids are unique per user and item, not per user

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# SQLite's copy of the old constraint has no name: this convention names it for the batch rebuild.
NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _old_client_constraint() -> str:
    return 'reviewtask_user_id_client_id_key' if op.get_bind().dialect.name == 'postgresql' \
        else 'uq_reviewtask_user_id_client_id'


def upgrade() -> None:
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_auditevent_project_id'), ['project_id'], unique=False)
        batch_op.create_foreign_key('fk_auditevent_project', 'project', ['project_id'], ['id'])
    # Events of items belong to the item's project; older events without an item cannot be placed.
    op.execute('UPDATE auditevent SET project_id = (SELECT project_id FROM item WHERE item.id = auditevent.item_id) '
               'WHERE item_id IS NOT NULL')
    with op.batch_alter_table('reviewtask', schema=None, naming_convention=NAMES) as batch_op:
        batch_op.drop_constraint(_old_client_constraint(), type_='unique')
        batch_op.create_unique_constraint('uq_reviewtask_client', ['user_id', 'item_id', 'client_id'])


def downgrade() -> None:
    with op.batch_alter_table('reviewtask', schema=None, naming_convention=NAMES) as batch_op:
        batch_op.drop_constraint('uq_reviewtask_client', type_='unique')
        batch_op.create_unique_constraint(_old_client_constraint(), ['user_id', 'client_id'])
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.drop_constraint('fk_auditevent_project', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_auditevent_project_id'))
        batch_op.drop_column('project_id')
