"""Consent (个人信息保护法 第十四条): before 我的信息 first asks for a name or a phone, and before binding to a
team, the person reads the short notice and answers 同意 / 不同意; the decision is recorded with its time,
purpose and the notice's version. Declining leaves everything that needs no personal data usable.

A flow asks for consent with :func:`gate`::

    if not await gate(ctx, "profile", resume="profile", resume_slots={"ask": "name"}):
        return            # the notice is shown; 同意 starts `profile` again with those intent slots
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select

from flows.api import Context, Flow, Services, flow, on_startup, parse_yes_no
from flows.privacy import texts
from flows.privacy.notice import load_notice
from storage.privacy import Consent
from storage.turnio import runner

log = logging.getLogger("vetbot.privacy")
ACCEPTED, DECLINED = "accepted", "declined"
FLOW = "privacy_consent"


@on_startup
async def _check_notice(services: Services) -> None:
    """A typo in the notice YAML stops the start with its file, line and a hint (not a user's turn)."""
    load_notice(services.config)


async def latest(ctx: Context, scope: str) -> Consent | None:
    """The decision in force for ``scope`` (the newest row), or None."""
    q = (select(Consent).where(Consent.openid == ctx.openid, Consent.scope == scope)
         .order_by(Consent.id.desc()).limit(1))
    return (await ctx.session.execute(q)).scalar_one_or_none()


# The decision in force for one purpose: built once, it runs on every 我的信息 and binding turn.
_LATEST = (select(Consent.decision, Consent.version)
           .where(Consent.openid == bindparam("o"), Consent.scope == bindparam("s"))
           .order_by(Consent.id.desc()).limit(1))


async def has_consent(ctx: Context, scope: str) -> bool:
    """Whether the person accepted the CURRENT version of the notice for ``scope``. On a batched SQLite
    turn the SELECT runs inline on the turn's connection (storage.turnio.runner): 我的信息 is on the main
    menu, and through the ORM the check cost a whole lazily created session."""
    version = load_notice(ctx.config).version
    got = (await runner(ctx.session).execute(_LATEST, {"o": ctx.openid, "s": scope})).first()
    return got is not None and got[0] == ACCEPTED and got[1] == version


async def record(ctx: Context, scope: str, decision: str, via: str = "chat") -> Consent:
    """Write one decision (append-only) in this turn's transaction."""
    row = Consent(openid=ctx.openid, scope=scope[:16], version=load_notice(ctx.config).version,
                  decision=decision, via=via, at=ctx.now)
    ctx.session.add(row)
    await ctx.session.flush()
    log.debug("consent %s: %s (notice %s)", scope, decision, row.version)
    return row


async def gate(ctx: Context, scope: str, *, resume: str, resume_slots: dict[str, str] | None = None,
               lead: str = "") -> bool:
    """True when consent for ``scope`` is on record; otherwise shows the notice (after ``lead``), puts the
    conversation on the consent question and returns False. On 同意 the flow ``resume`` starts again
    with ``resume_slots`` as its intent slots (plain strings)."""
    if await has_consent(ctx, scope):
        return True
    ask(ctx, scope, resume=resume, resume_slots=resume_slots or {}, lead=lead)
    return False


def ask(ctx: Context, scope: str, *, resume: str, resume_slots: dict[str, str], lead: str = "") -> None:
    """Show the notice and wait for 同意 / 不同意 (works from a flow and from a QR-scene handler)."""
    notice = load_notice(ctx.config)
    ctx.flow, ctx.step, ctx.stack, ctx.reasks, ctx.ended, ctx.next_flow = FLOW, "decide", [], 0, False, None
    ctx.slots = {"scope": scope, "resume": resume, "resume_slots": dict(resume_slots)}
    if lead:
        ctx.say(lead)
    ctx.choose([("同意", "yes"), ("不同意", "no")], header=notice.chat(scope),
               footer=texts.CONSENT_FOOTER.format(url=texts.notice_url(ctx.config)))


@flow
class ConsentFlow(Flow):
    """同意 / 不同意 to the notice; entered through :func:`gate`, never from an intent."""

    name = FLOW
    title = "个人信息保护提示"

    async def start(self, ctx: Context) -> None:
        # Only reached by 返回 (the slots are gone then): show the notice; nothing to resume.
        ctx.say(load_notice(ctx.config).chat() + "\n" + texts.NOTICE_MORE.format(url=texts.notice_url(ctx.config)))
        ctx.end()

    async def step(self, ctx: Context) -> None:
        s = ctx.slots
        scope = str(s.get("scope") or "profile")
        answer = ctx.picked
        if answer is None:
            yn = parse_yes_no(ctx.text, digits=False)
            answer = None if yn is None else ("yes" if yn else "no")
        if answer == "yes":
            await record(ctx, scope, ACCEPTED)
            ctx.say(texts.CONSENT_THANKS)
            ctx.switch(str(s.get("resume") or "help"), {str(k): str(v) for k, v in (s.get("resume_slots") or {}).items()})
            return
        if answer == "no":
            await record(ctx, scope, DECLINED)
            ctx.say(texts.DECLINED)
            ctx.end()
            return
        if ctx.reask(texts.CONSENT_REASK):
            ctx.choose([("同意", "yes"), ("不同意", "no")])

    async def prompt(self, ctx: Context, step: str) -> None:
        await self.start(ctx)
