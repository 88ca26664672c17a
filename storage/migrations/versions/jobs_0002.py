"""jobs: a digest stores its cursor range and criteria instead of every posting id

A digest row used to list every matching posting id (``posting_ids``) and how many were in the push
(``shown``); it now stores what it covered (``after_id < id <= upto_id`` matching ``criteria``), the ids
in the push (``shown_ids``) and the number that matched (``total``), and the "see all" page lists them
again from these. Old rows cannot be converted (their criteria were not kept), so the table is recreated:
links in digests sent before the upgrade open a page saying the digest no longer exists and pointing to
找工作; subscriptions, postings and the sent log are untouched, so nobody gets a posting twice.

Revision ID: jobs_0002
Revises: jobs_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "jobs_0002"
down_revision = "jobs_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_digests_openid", table_name="jobs_digests")
    op.drop_table("jobs_digests")
    op.create_table(
        "jobs_digests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("after_id", sa.Integer(), nullable=False),
        sa.Column("upto_id", sa.Integer(), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=False),
        sa.Column("shown_ids", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs_digests"),
    )
    op.create_index("ix_jobs_digests_openid", "jobs_digests", ["openid"])


def downgrade() -> None:
    op.drop_index("ix_jobs_digests_openid", table_name="jobs_digests")
    op.drop_table("jobs_digests")
    op.create_table(
        "jobs_digests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("posting_ids", sa.Text(), nullable=False),
        sa.Column("shown", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs_digests"),
    )
    op.create_index("ix_jobs_digests_openid", "jobs_digests", ["openid"])
