"""privacy: consent records, the erasure log; LOCATION columns dropped (个人信息保护法)

* ``privacy_consents``: each decision on the 个人信息保护提示 (accepted / declined), its purpose, the notice
  version shown and when (append-only; the latest per openid and purpose is in force).
* ``privacy_erasures``: the audit log of erasures (self, staff, unfollow): when, by whom, how many rows
  per table, the pseudonym kept counts carry; no identity of the erased person.
* ``users.latitude/longitude/location_at`` are dropped: LOCATION reports are 行踪轨迹 (sensitive personal
  information) and no feature used them. The values are blanked first with SQLite's ``secure_delete`` on,
  so they are overwritten rather than left in free pages.

Revision ID: privacy_0001
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "privacy_0001"
down_revision = "0001"
branch_labels = ("privacy",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_consents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_privacy_consents"),
    )
    op.create_index("ix_privacy_consents_openid", "privacy_consents", ["openid"])
    op.create_table(
        "privacy_erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("pseudonym", sa.String(32), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("compacted_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_privacy_erasures"),
    )
    op.create_index("ix_privacy_erasures_compacted_at", "privacy_erasures", ["compacted_at"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete = ON")
    op.execute("UPDATE users SET latitude = NULL, longitude = NULL, location_at = NULL "
               "WHERE latitude IS NOT NULL OR longitude IS NOT NULL OR location_at IS NOT NULL")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("latitude")
        batch.drop_column("longitude")
        batch.drop_column("location_at")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("latitude", sa.Float()))
        batch.add_column(sa.Column("longitude", sa.Float()))
        batch.add_column(sa.Column("location_at", sa.DateTime()))
    op.drop_index("ix_privacy_erasures_compacted_at", table_name="privacy_erasures")
    op.drop_table("privacy_erasures")
    op.drop_index("ix_privacy_consents_openid", table_name="privacy_consents")
    op.drop_table("privacy_consents")
