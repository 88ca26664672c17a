"""content: opaque link tokens (link_tokens), hashed at rest

Memorial page links used to carry signed, readable claims (the user's openid) valid for a week; they now
carry a random token whose SHA-256 is stored here with its kind, owner, expiry and (optionally) single
use and the first client that acted with it. Links sent before the upgrade open a page saying the link
has expired and how to get a new one (回复“祭英烈”).

Revision ID: content_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "content_0001"
down_revision = "0001"
branch_labels = ("content",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "link_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("data", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("single_use", sa.Boolean(), nullable=False),
        sa.Column("used_at", sa.DateTime()),
        sa.Column("holder", sa.String(64)),
        sa.PrimaryKeyConstraint("token_hash", name="pk_link_tokens"),
    )
    op.create_index("ix_link_tokens_openid", "link_tokens", ["openid"])
    op.create_index("ix_link_tokens_expires_at", "link_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_link_tokens_expires_at", table_name="link_tokens")
    op.drop_index("ix_link_tokens_openid", table_name="link_tokens")
    op.drop_table("link_tokens")
