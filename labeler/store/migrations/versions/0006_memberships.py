"""users hold roles per project (membership); users can be disabled and their sessions ended

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

ROLES = ('admin', 'manager', 'reviewer', 'expert')


def _role_type():
    # PostgreSQL has the enum type already (user.role made it): reuse it, do not create it again.
    if op.get_bind().dialect.name == 'postgresql':
        return postgresql.ENUM(*ROLES, name='role', create_type=False)
    return sa.Enum(*ROLES, name='role')


def upgrade() -> None:
    op.create_table('membership',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('role', _role_type(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('user_id', 'project_id')
    )
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_membership_project_id'), ['project_id'], unique=False)
    # Users were global: each keeps its role in every project there is.
    op.execute('INSERT INTO membership (user_id, project_id, role) '
               'SELECT "user".id, project.id, "user".role FROM "user" CROSS JOIN project')
    op.add_column('user', sa.Column('disabled', sa.Boolean(), server_default='0', nullable=False))
    op.add_column('user', sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))
    # In place (SQLite 3.35+ drops a column without rebuilding the table, which other tables' keys point at).
    op.execute('ALTER TABLE "user" DROP COLUMN role')


def downgrade() -> None:
    op.add_column('user', sa.Column('role', _role_type(), nullable=True))
    op.execute('ALTER TABLE "user" DROP COLUMN session_generation')
    op.execute('ALTER TABLE "user" DROP COLUMN disabled')
    op.execute('UPDATE "user" SET role = (SELECT min(role) FROM membership WHERE membership.user_id = "user".id)')
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_membership_project_id'))
    op.drop_table('membership')
