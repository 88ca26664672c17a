"""policy Q&A: unanswered questions (qa_gaps)

Revision ID: qa_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "qa_0001"
down_revision = "0001"
branch_labels = ("qa",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qa_gaps",
        sa.Column("norm", sa.String(200), nullable=False),
        sa.Column("example", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("best_id", sa.String(64)),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("norm", name="pk_qa_gaps"),
    )


def downgrade() -> None:
    op.drop_table("qa_gaps")
