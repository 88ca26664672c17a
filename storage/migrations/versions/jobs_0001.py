"""jobs: postings, subscriptions, sent log, digests

Revision ID: jobs_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "jobs_0001"
down_revision = "0001"
branch_labels = ("jobs",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs_postings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("natural_key", sa.String(255), nullable=False),
        sa.Column("company", sa.String(128), nullable=False),
        sa.Column("title", sa.String(128), nullable=False),
        sa.Column("location", sa.String(128), nullable=False),
        sa.Column("salary_min", sa.Integer()),
        sa.Column("salary_max", sa.Integer()),
        sa.Column("job_type", sa.String(8), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("contact", sa.String(128), nullable=False),
        sa.Column("deadline", sa.Date()),
        sa.Column("expires_at", sa.DateTime()),
        sa.Column("veteran_priority", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs_postings"),
        sa.UniqueConstraint("natural_key", name="uq_jobs_postings_natural_key"),
    )
    op.create_index("ix_jobs_postings_expires_at", "jobs_postings", ["expires_at"])
    op.create_table(
        "jobs_subscriptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("places", sa.Text(), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("min_salary", sa.Integer(), nullable=False),
        sa.Column("job_type", sa.String(8), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("digest_minute", sa.Integer(), nullable=False),
        sa.Column("quiet_start", sa.Integer(), nullable=False),
        sa.Column("quiet_end", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("next_digest_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs_subscriptions"),
        sa.UniqueConstraint("openid", name="uq_jobs_subscriptions_openid"),
    )
    op.create_index("ix_jobs_subscriptions_next_digest_at", "jobs_subscriptions", ["next_digest_at"])
    op.create_table(
        "jobs_sent",
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("posting_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("openid", "posting_id", name="pk_jobs_sent"),
    )
    op.create_index("ix_jobs_sent_day", "jobs_sent", ["day", "kind"])
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


def downgrade() -> None:
    op.drop_index("ix_jobs_digests_openid", table_name="jobs_digests")
    op.drop_table("jobs_digests")
    op.drop_index("ix_jobs_sent_day", table_name="jobs_sent")
    op.drop_table("jobs_sent")
    op.drop_index("ix_jobs_subscriptions_next_digest_at", table_name="jobs_subscriptions")
    op.drop_table("jobs_subscriptions")
    op.drop_index("ix_jobs_postings_expires_at", table_name="jobs_postings")
    op.drop_table("jobs_postings")
