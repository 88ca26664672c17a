"""knowledge base edited in the staff console: overlay entries and their history

Revision ID: kb_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "kb_0001"
down_revision = "0001"
branch_labels = ("kb",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kb_entries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_by_name", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_entries"),
    )
    op.create_table(
        "kb_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("before", sa.Text()),
        sa.Column("after", sa.Text()),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("by_name", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_history"),
    )
    op.create_index("ix_kb_history_entry_id", "kb_history", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_kb_history_entry_id", table_name="kb_history")
    op.drop_table("kb_history")
    op.drop_table("kb_entries")
