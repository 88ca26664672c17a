"""call-ups: binding attempts (durable rate limits) and binding requests (SMS code or approval)

Binding by team code + roster phone alone let anyone who knew a member's phone act as them. A binding
now waits for an SMS code sent to the roster phone, or for the team leader's or staff's approval; every
attempt is counted per WeChat user and per team so guessing is rate-limited across restarts and
processes.

Revision ID: callup_0002
Revises: callup_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "callup_0002"
down_revision = "callup_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callup_bind_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer()),
        sa.Column("what", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_bind_attempts"),
    )
    op.create_index("ix_callup_bind_attempts_openid_at", "callup_bind_attempts", ["openid", "at"])
    op.create_index("ix_callup_bind_attempts_team_id_at", "callup_bind_attempts", ["team_id", "at"])
    op.create_table(
        "callup_bind_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer()),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("code_sent_at", sa.DateTime()),
        sa.Column("code_expires_at", sa.DateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime()),
        sa.Column("decided_by", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_callup_bind_requests"),
        sa.ForeignKeyConstraint(["team_id"], ["callup_teams.id"], name="fk_callup_bind_requests_team_id_callup_teams"),
        sa.ForeignKeyConstraint(["member_id"], ["callup_members.id"],
                                name="fk_callup_bind_requests_member_id_callup_members"),
    )
    op.create_index("ix_callup_bind_requests_openid_status", "callup_bind_requests", ["openid", "status"])
    op.create_index("ix_callup_bind_requests_team_id_status", "callup_bind_requests", ["team_id", "status"])


def downgrade() -> None:
    op.drop_table("callup_bind_requests")
    op.drop_table("callup_bind_attempts")
