"""就业岗位推送 (issue 7): postings, browsing (找工作), subscriptions and alerts.

Public API for other features and tools:

* :func:`flows.jobs.csvimport.read_postings` — parse and validate a postings CSV (all errors at once);
* :func:`flows.jobs.alerts.store_postings` — store postings and queue their alerts in one transaction;
* :func:`flows.jobs.alerts.run_digests` / :func:`flows.jobs.alerts.expire_due` — what the ticks
  ``jobs_digest`` and ``jobs_expire`` run;
* :func:`flows.jobs.alerts.job_links` — per-person page links (opaque tokens in the database);
* :class:`flows.jobs.matching.SubscriptionIndex` and :func:`flows.jobs.matching.matches` — matching.
"""

from flows.jobs import alerts, browse, subscribe  # noqa: F401 - registers flows and ticks
