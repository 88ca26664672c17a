"""memorial: martyr roll, tribute counters and per-day rows, participants, messages, campaigns, reminders

Revision ID: memorial_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "memorial_0001"
down_revision = "0001"
branch_labels = ("memorial",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memorial_martyrs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("natural_key", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("gender", sa.String(8), nullable=False),
        sa.Column("hometown", sa.String(128), nullable=False),
        sa.Column("born", sa.String(10), nullable=False),
        sa.Column("died", sa.String(10), nullable=False),
        sa.Column("unit", sa.String(200), nullable=False),
        sa.Column("place_of_death", sa.String(200), nullable=False),
        sa.Column("burial", sa.String(200), nullable=False),
        sa.Column("biography", sa.Text(), nullable=False),
        sa.Column("photo_url", sa.String(500)),
        sa.Column("initials", sa.String(200), nullable=False),
        sa.Column("pinyin", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memorial_martyrs"),
        sa.UniqueConstraint("natural_key", name="uq_memorial_martyrs_natural_key"),
    )
    op.create_index("ix_memorial_martyrs_name", "memorial_martyrs", ["name"])
    op.create_table(
        "memorial_counters",
        sa.Column("martyr_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("martyr_id", "action", name="pk_memorial_counters"),
    )
    op.create_table(
        "memorial_tributes",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("martyr_id", sa.Integer(), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("day", "martyr_id", "openid", "action", name="pk_memorial_tributes"),
    )
    op.create_table(
        "memorial_participants",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("openid", name="pk_memorial_participants"),
    )
    op.create_index("ix_memorial_participants_first_day", "memorial_participants", ["first_day"])
    op.create_table(
        "memorial_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("martyr_id", sa.Integer(), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("preset", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime()),
        sa.Column("decided_by", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_memorial_messages"),
    )
    op.create_index("ix_memorial_messages_target", "memorial_messages", ["martyr_id", "status", "id"])
    op.create_index("ix_memorial_messages_openid", "memorial_messages", ["openid"])
    op.create_index("ix_memorial_messages_status", "memorial_messages", ["status"])
    op.create_table(
        "memorial_campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("reminded_at", sa.DateTime()),
        sa.Column("reminders_queued", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memorial_campaigns"),
        sa.UniqueConstraint("code", name="uq_memorial_campaigns_code"),
    )
    op.create_index("ix_memorial_campaigns_day", "memorial_campaigns", ["day"])
    op.create_table(
        "memorial_reminders",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("openid", name="pk_memorial_reminders"),
    )


def downgrade() -> None:
    for t in ("memorial_reminders", "memorial_campaigns", "memorial_messages", "memorial_participants",
              "memorial_tributes", "memorial_counters", "memorial_martyrs"):
        op.drop_table(t)
