"""群发通知: staff notices to followers by role, township or team, with a delivery report.

Modules: :mod:`.service` (audience and its explanation, queueing, report words, taking a notice back;
shared by ``vetbot broadcast``, the staff console and the chat) and :mod:`.flow` (群发通知 in chat).
"""

from flows.broadcast import flow  # noqa: F401 - registers the chat flow
