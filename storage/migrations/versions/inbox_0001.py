"""人工 inbox: the thread of each ticket (ticket_messages) and staff on leave (staff_duty)

Revision ID: inbox_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "inbox_0001"
down_revision = "0001"
branch_labels = ("inbox",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("author", sa.String(8), nullable=False),
        sa.Column("staff_openid", sa.String(64)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("via", sa.String(8)),
        sa.Column("outbox_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_messages"),
    )
    op.create_index("ix_ticket_messages_ticket_id", "ticket_messages", ["ticket_id"])
    op.create_index("ix_ticket_messages_openid", "ticket_messages", ["openid"])
    op.create_table(
        "staff_duty",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("on_leave", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("openid", name="pk_staff_duty"),
    )


def downgrade() -> None:
    op.drop_table("staff_duty")
    op.drop_index("ix_ticket_messages_openid", table_name="ticket_messages")
    op.drop_index("ix_ticket_messages_ticket_id", table_name="ticket_messages")
    op.drop_table("ticket_messages")
