"""wechat: 订阅通知 consent per person and template; voice message counts and the daily voice hint

Revision ID: wechat_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "wechat_0001"
down_revision = "0001"
branch_labels = ("wechat",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscribe_consents",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("scene", sa.String(16)),
        sa.Column("accepted_at", sa.DateTime()),
        sa.Column("rejected_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", sa.DateTime()),
        sa.Column("last_result", sa.String(64)),
        sa.PrimaryKeyConstraint("openid", "template_id", name="pk_subscribe_consents"),
    )
    op.create_table(
        "voice_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "outcome", name="pk_voice_counts"),
    )
    op.create_table(
        "voice_hints",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("openid", name="pk_voice_hints"),
    )


def downgrade() -> None:
    op.drop_table("voice_hints")
    op.drop_table("voice_counts")
    op.drop_table("subscribe_consents")
