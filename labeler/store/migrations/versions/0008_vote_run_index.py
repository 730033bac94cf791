"""index vote.run_id: a distributed run's budget sums its spend every second

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_vote_run_id', 'vote', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_vote_run_id', table_name='vote')
