"""sec: message dedup keys name their sender (m:<MsgId> -> m:<openid>:<MsgId>)

The dedup key of a message used to be ``m:<MsgId>`` alone, so another openid posting the same MsgId
got the first sender's stored reply. New keys are ``m:<openid>:<MsgId>``. Rows written under the old
key would no longer match a WeChat retry that straddles the upgrade (first try answered by the old
version, the retry by the new one), and that turn would run twice. A dedup row does not name its
sender, but the turn that wrote it also set the sender's ``users.last_message_at`` to the same
``now``: message rows of the last 10 minutes whose time matches exactly one user are rewritten to the
new key. Older rows (WeChat retries within seconds) and ambiguous ones stay as they are and simply
expire; they can no longer match anything.

Revision ID: sec_0002
Revises: sec_0001
"""
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "sec_0002"
down_revision = "sec_0001"
branch_labels = None
depends_on = None

#: WeChat retries within about 15 s; 10 minutes also covers a slow rolling restart.
RECENT = timedelta(minutes=10)

_SENDER = ("(SELECT u.openid FROM users u WHERE u.last_message_at = inbound_dedup.created_at)")
_MATCHES = ("(SELECT count(*) FROM users u WHERE u.last_message_at = inbound_dedup.created_at)")


def upgrade() -> None:
    conn = op.get_bind()
    newest = conn.execute(sa.text("SELECT max(created_at) FROM inbound_dedup WHERE key LIKE 'm:%'")).scalar()
    if newest is None:
        return
    if isinstance(newest, str):  # SQLite keeps DateTime as text
        from datetime import datetime

        newest = datetime.fromisoformat(newest)
    cutoff = newest - RECENT
    conn.execute(
        sa.text(f"UPDATE inbound_dedup SET key = 'm:' || {_SENDER} || ':' || substr(key, 3) "
                f"WHERE key LIKE 'm:%' AND key NOT LIKE 'm:%:%' AND key NOT LIKE '%#%' AND length(key) <= 90 "
                f"AND created_at >= :cutoff AND {_MATCHES} = 1")
        .bindparams(sa.bindparam("cutoff", cutoff, type_=sa.DateTime())))


def downgrade() -> None:
    # Old code looks for m:<MsgId>; rows under the new key then expire unused (see the module text).
    pass
