"""个人信息保护: notice and consent, 我的数据, 注销, erasure after unfollowing, retention (issue 18).

The public surface other features use:

* :func:`erase_person` — ``await erase_person(session, openid, by="staff:张科员", now=now) -> ErasureReport``
  erases one person in the caller's transaction (the staff console calls it); then :func:`compact`
  (or the ``privacy_compact`` tick) removes the erased bytes from a SQLite file.
* :func:`export` — everything stored about a person as a JSON-ready document.
* :func:`gate` — ask for consent before a flow collects personal data.
* storage/privacy.py — the declarations every table makes, which all of this is derived from.
"""

from flows.privacy.consent import gate, has_consent
from flows.privacy.service import ErasureReport, compact, erase_person, export, export_json

__all__ = ["ErasureReport", "compact", "erase_person", "export", "export_json", "gate", "has_consent"]
