"""staff console: login links and QR attempts, sessions, audit log, notices, Q&A decision log, outbox ref index

Revision ID: console_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "console_0001"
down_revision = "0001"
branch_labels = ("console",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_logins",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scene_hash", sa.String(64)),
        sa.Column("openid", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("client", sa.String(200), nullable=False),
        sa.Column("qr_url", sa.String(500)),
        sa.Column("next_path", sa.String(200)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_console_logins"),
        sa.UniqueConstraint("secret_hash", name="uq_console_logins_secret_hash"),
        sa.UniqueConstraint("scene_hash", name="uq_console_logins_scene_hash"),
    )
    op.create_index("ix_console_logins_expires_at", "console_logins", ["expires_at"])
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        sa.Column("client", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_openid", "console_sessions", ["openid"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "staff_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("actor_name", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff_audit"),
    )
    op.create_index("ix_staff_audit_at", "staff_audit", ["at"])
    op.create_index("ix_staff_audit_actor", "staff_audit", ["actor"])
    op.create_index("ix_staff_audit_action", "staff_audit", ["action"])
    op.create_index("ix_staff_audit_target", "staff_audit", ["target_type", "target_id"])
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("url", sa.String(500)),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("audience_label", sa.String(200), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("queued_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("cancelled_at", sa.DateTime()),
        sa.Column("cancelled_by", sa.String(64)),
        sa.Column("warning", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_broadcasts"),
        sa.UniqueConstraint("key", name="uq_broadcasts_key"),
    )
    op.create_index("ix_broadcasts_due_at", "broadcasts", ["due_at"])
    op.create_table(
        "qa_asks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("entry_id", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_qa_asks"),
    )
    op.create_index("ix_qa_asks_at", "qa_asks", ["at"])
    # A feature's pushes (a notice's delivery report, a call-up's audit trail) without a full scan.
    op.create_index("ix_outbox_ref", "outbox", ["ref_type", "ref_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_ref", table_name="outbox")
    op.drop_table("qa_asks")
    op.drop_table("broadcasts")
    op.drop_table("staff_audit")
    op.drop_table("console_sessions")
    op.drop_table("console_logins")
