"""云端祭英烈 (online memorial): martyr roll search, tributes with exact counts, moderated 寄语, campaigns.

Modules: ``flow`` (the chat flows ``memorial`` and ``martyr_search``), ``service`` (tribute and message
rules shared with the page ``bot/web/memorial.py``), ``wordfilter`` (sensitive words), ``roll`` (the CSV
roll), ``names`` (pinyin keys), ``calendar`` (Qingming, 9·30), ``campaigns`` (the reminder tick) and
``texts``. Tables and queries live in :mod:`storage.memorial`.
"""
