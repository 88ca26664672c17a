"""core: users, inbound dedup, conversations, tickets, outbox, shared token

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("openid", sa.String(64), primary_key=True),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("subscribed_at", sa.DateTime()),
        sa.Column("unsubscribed_at", sa.DateTime()),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("last_message_at", sa.DateTime()),
        sa.Column("last_event_at", sa.DateTime()),
        sa.Column("kefu_sent", sa.Integer(), nullable=False),
        sa.Column("qr_scene", sa.String(64)),
        sa.Column("latitude", sa.Float()),
        sa.Column("longitude", sa.Float()),
        sa.Column("location_at", sa.DateTime()),
        sa.Column("roles", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64)),
        sa.Column("phone", sa.String(20)),
        sa.Column("township", sa.String(64)),
        sa.Column("kind", sa.String(16)),
        sa.PrimaryKeyConstraint("openid", name="pk_users"),
    )
    op.create_index("ix_users_phone", "users", ["phone"])
    op.create_table(
        "inbound_dedup",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("reply", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_inbound_dedup"),
    )
    op.create_index("ix_inbound_dedup_expires_at", "inbound_dedup", ["expires_at"])
    op.create_table(
        "conversations",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64)),
        sa.Column("step", sa.String(64)),
        sa.Column("slots", sa.Text(), nullable=False),
        sa.Column("stack", sa.Text(), nullable=False),
        sa.Column("choices", sa.Text(), nullable=False),
        sa.Column("choice_kind", sa.String(32)),
        sa.Column("reasks", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("expired", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("openid", name="pk_conversations"),
    )
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"])
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime()),
        sa.Column("staff_reply", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_openid", "tickets", ["openid"])
    op.create_index("ix_tickets_status", "tickets", ["status"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16)),
        sa.Column("skipped_channels", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_at", sa.DateTime()),
        sa.Column("sent_at", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("wechat_msgid", sa.BigInteger()),
        sa.Column("delivery_status", sa.String(64)),
        sa.Column("ref_type", sa.String(32)),
        sa.Column("ref_id", sa.Integer()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "priority", "due_at"])
    op.create_index("ix_outbox_openid", "outbox", ["openid"])
    op.create_index("ix_outbox_wechat_msgid", "outbox", ["wechat_msgid"])
    op.create_table(
        "wechat_tokens",
        sa.Column("appid", sa.String(64), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("appid", name="pk_wechat_tokens"),
    )


def downgrade() -> None:
    for t in ("wechat_tokens", "outbox", "tickets", "conversations", "inbound_dedup", "users"):
        op.drop_table(t)
