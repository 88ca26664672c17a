"""sms: inbound SMS answers to call-ups, remembered by message id (sms_inbound)

Revision ID: sms_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "sms_0001"
down_revision = "0001"
branch_labels = ("sms",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_inbound",
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("member_id", sa.Integer()),
        sa.Column("callup_id", sa.Integer()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("recorded_as", sa.String(16)),
        sa.PrimaryKeyConstraint("message_key", name="pk_sms_inbound"),
    )
    op.create_index("ix_sms_inbound_received_at", "sms_inbound", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_sms_inbound_received_at", "sms_inbound")
    op.drop_table("sms_inbound")
