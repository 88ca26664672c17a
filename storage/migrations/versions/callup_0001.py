"""call-ups: volunteer teams, members, call-ups, targets, answers, audit events

Revision ID: callup_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "callup_0001"
down_revision = "0001"
branch_labels = ("callup",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callup_teams",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("leader", sa.String(64)),
        sa.Column("leader_phone", sa.String(20)),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_teams"),
        sa.UniqueConstraint("name", name="uq_callup_teams_name"),
        sa.UniqueConstraint("code", name="uq_callup_teams_code"),
    )
    op.create_table(
        "callup_members",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("skills", sa.Text(), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("openid", sa.String(64)),
        sa.Column("bound_at", sa.DateTime()),
        sa.Column("away_until", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_members"),
        sa.ForeignKeyConstraint(["team_id"], ["callup_teams.id"], name="fk_callup_members_team_id_callup_teams"),
        sa.UniqueConstraint("phone", name="uq_callup_members_phone"),
        sa.UniqueConstraint("openid", name="uq_callup_members_openid"),
    )
    op.create_index("ix_callup_members_team_id", "callup_members", ["team_id"])
    op.create_table(
        "callups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("assemble_at", sa.DateTime(), nullable=False),
        sa.Column("needed", sa.Integer(), nullable=False),
        sa.Column("skills_needed", sa.Text(), nullable=False),
        sa.Column("team_ids", sa.Text(), nullable=False),
        sa.Column("scope_label", sa.String(200), nullable=False),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("late_counts", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("next_due_at", sa.DateTime()),
        sa.Column("link_expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("filled_at", sa.DateTime()),
        sa.Column("closed_at", sa.DateTime()),
        sa.Column("closed_by", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_callups"),
    )
    op.create_index("ix_callups_state_next_due_at", "callups", ["state", "next_due_at"])
    op.create_table(
        "callup_targets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("callup_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("skills", sa.Text(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("eta_min", sa.Integer()),
        sa.Column("answered_at", sa.DateTime()),
        sa.Column("answered_via", sa.String(16)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_targets"),
        sa.ForeignKeyConstraint(["callup_id"], ["callups.id"], name="fk_callup_targets_callup_id_callups"),
        sa.ForeignKeyConstraint(["member_id"], ["callup_members.id"],
                                name="fk_callup_targets_member_id_callup_members"),
        sa.UniqueConstraint("callup_id", "member_id", name="uq_callup_targets_callup_id"),
    )
    op.create_index("ix_callup_targets_member_id", "callup_targets", ["member_id"])
    op.create_index("ix_callup_targets_callup_id_status", "callup_targets", ["callup_id", "status"])
    op.create_table(
        "callup_answers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("callup_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(8), nullable=False),
        sa.Column("recorded_as", sa.String(16), nullable=False),
        sa.Column("eta_min", sa.Integer()),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_answers"),
        sa.ForeignKeyConstraint(["callup_id"], ["callups.id"], name="fk_callup_answers_callup_id_callups"),
        sa.ForeignKeyConstraint(["member_id"], ["callup_members.id"],
                                name="fk_callup_answers_member_id_callup_members"),
    )
    op.create_index("ix_callup_answers_callup_id", "callup_answers", ["callup_id"])
    op.create_table(
        "callup_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("callup_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_callup_events"),
        sa.ForeignKeyConstraint(["callup_id"], ["callups.id"], name="fk_callup_events_callup_id_callups"),
    )
    op.create_index("ix_callup_events_callup_id", "callup_events", ["callup_id"])


def downgrade() -> None:
    op.drop_table("callup_events")
    op.drop_table("callup_answers")
    op.drop_table("callup_targets")
    op.drop_table("callups")
    op.drop_table("callup_members")
    op.drop_table("callup_teams")
