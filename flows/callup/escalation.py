"""The escalation jobs: every open call-up whose next chain step is due runs that one step, and an
auditor that tells staff when a call-up's escalation is stuck or its pushes keep failing.

Due work is read from the table (``callups.next_due_at <= now``), so a restart re-derives every timer.
Each call-up runs in its own transaction under its row lock (see :func:`service.run_step`): a failure
in one never holds back the others, and a step that crashed before commit simply runs again. A step
that keeps failing (or a tick that stopped running) is what :func:`audit` catches.
"""

from __future__ import annotations

import logging

from flows.api import TickContext, tick
from flows.callup import service

log = logging.getLogger("vetbot.callup")


@tick("callup_escalate", 15)
async def escalate(t: TickContext) -> int:
    """Run one due escalation step per call-up; returns how many steps ran."""
    async with t.db.session() as s:
        due = await service.due_callups(s, t.now)
    ran = 0
    for callup_id in due:
        try:
            async with t.db.session() as s:
                if await service.run_step(s, t.services, callup_id, t.now):
                    ran += 1
        except Exception:
            log.exception("escalation step of call-up %s failed; it stays due and is retried", callup_id)
    return ran


@tick("callup_audit", 60)
async def audit(t: TickContext) -> int:
    """Alert staff about overdue or failing call-ups (see :func:`service.audit`); returns alerts raised."""
    async with t.db.session() as s:
        raised = await service.audit(s, t.services, t.now)
    for a in raised:
        log.error("call-up %s: %s (staff alerted)", a.callup_id, a.problem)
    return len(raised)
