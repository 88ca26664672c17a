"""sec: callback (timestamp, nonce) pairs seen, shared by every serve process (callback_nonces)

Revision ID: sec_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "sec_0001"
down_revision = "0001"
branch_labels = ("sec",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_nonces",
        sa.Column("key", sa.String(40), nullable=False),
        sa.Column("digest", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_callback_nonces"),
    )
    op.create_index("ix_callback_nonces_expires_at", "callback_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_callback_nonces_expires_at", "callback_nonces")
    op.drop_table("callback_nonces")
