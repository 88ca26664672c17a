"""pages: wrong answers at a member page's phone-digit check (page_gate_attempts)

Revision ID: pages_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "pages_0001"
down_revision = "0001"
branch_labels = ("pages",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_gate_attempts",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_page_gate_attempts"),
    )
    op.create_index("ix_page_gate_attempts_window_end", "page_gate_attempts", ["window_end"])


def downgrade() -> None:
    op.drop_index("ix_page_gate_attempts_window_end", "page_gate_attempts")
    op.drop_table("page_gate_attempts")
