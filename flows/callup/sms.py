"""Answering a call-up by SMS: what a message to ``POST /sms/inbound`` does (bot/web/sms.py checks it).

A roster member without WeChat gets the call-up by SMS (:func:`.service._sms_notify`) and answers by
replying 到 / 晚到 / 不能到 in their own words (1 / 2 / 3, 去不了, 晚半个钟头 …, read by
:func:`bot.answers.parse_callup_answer`). The sender's phone finds the roster member; the answer goes to
their newest call-up that waits for one (else their newest active call-up: a change of mind). The
message id is remembered in the same transaction (:mod:`storage.sms`), so a retried webhook records
nothing twice and sends no second confirmation. The confirmation goes back by SMS through the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import PHONE_RE, Services, clean_phone, parse_callup_answer
from flows.callup import service, texts
from storage import callup as repo
from storage import sms as store
from storage.callup import LATE, PENDING
from storage.outbox import HIGH, Push, enqueue

#: What came of a message (``storage.sms`` outcomes, plus ``duplicate`` for a message seen before).
DUPLICATE = "duplicate"
LATE_ASK = "如能估计晚多久，可再回复，例如：晚到30分钟。"
CHANGE_HINT = "如有变化，随时回复：1 到 / 2 晚到 / 3 不能到。"


@dataclass
class SmsAnswer:
    """What an inbound SMS did: ``outcome`` (recorded / unknown / unclear / closed / duplicate), the
    ``reply`` queued to the sender ("" for a duplicate) and, when recorded, the call-up and status."""

    outcome: str
    reply: str = ""
    callup_id: int | None = None
    recorded_as: str | None = None


def sender_phone(raw: str) -> str:
    """The roster form of a sender number as gateways write it (+86 138…, 0086138…, 138 0000 1234)."""
    digits = clean_phone(raw or "")
    if digits.startswith("0086") and len(digits) == 15:
        digits = digits[4:]
    return digits if PHONE_RE.match(digits) else ""


#: A reply that records nothing (unknown phone, no open call-up, not an answer) goes to a phone at most
#: once in this many seconds: an auto-responder answering our reply must not start an endless exchange.
HINT_EVERY_S = 3600


async def _reply(session: AsyncSession, services: Services, message_id: str, phone: str, text: str,
                 now: datetime, *, hint: str = "") -> None:
    if not phone or not service.sms_enabled(services):
        return
    if not hint:
        key = f"sms:in:{store.message_key(message_id)}"  # one confirmation per message
    else:  # one reply of each kind per phone and HINT_EVERY_S
        key = f"sms:{hint}:{store.message_key(phone)[:16]}:{service.epoch(now) // HINT_EVERY_S}"
    await enqueue(session, Push(openid="", purpose="sms_reply", key=key, text=text, priority=HIGH,
                                ref_type="sms_inbound", sms_to=phone), now)


async def answer_by_sms(session: AsyncSession, services: Services, message_id: str, sender: str, text: str,
                        now: datetime) -> SmsAnswer:
    """Record the answer an inbound SMS carries, once per ``message_id``, in the caller's transaction.

    An unknown phone, or a member with no active call-up, gets a polite reply and nothing is recorded;
    words that are not an answer get the 1 / 2 / 3 hint."""
    if not await store.claim(session, message_id, now):
        return SmsAnswer(DUPLICATE)
    phone = sender_phone(sender)
    member, active = await repo.open_targets_by_phone(session, phone) if phone else (None, [])
    if member is None or not active:
        await store.settle(session, message_id, store.UNKNOWN)
        await _reply(session, services, message_id, phone, texts.SMS_NOTHING_OPEN, now, hint=store.UNKNOWN)
        return SmsAnswer(store.UNKNOWN, texts.SMS_NOTHING_OPEN)
    pending = [(c, t) for c, t in active if t.status == PENDING]
    c, _ = (pending or active)[0]
    reading = parse_callup_answer(text or "")
    if reading is None or not reading.recordable:
        await store.settle(session, message_id, store.UNCLEAR, member_id=member.id, callup_id=c.id)
        reply = f"{texts.label(c)}\n{texts.SMS_UNCLEAR}"
        await _reply(session, services, message_id, phone, reply, now, hint=store.UNCLEAR)
        return SmsAnswer(store.UNCLEAR, reply, c.id)
    answer, eta = reading.answer, reading.eta_min
    if answer == "late" and eta is None and reading.at_clock is not None:
        eta = service.minutes_late(c, reading.at_clock, services.config.bot.timezone)
        if eta == 0:
            answer = "yes"  # arriving by the assembly time is 到
    r = await service.record_answer(session, services, c.id, member.id, answer, now, eta_min=eta or None, via="sms")
    if r.recorded_as is None:
        await store.settle(session, message_id, store.CLOSED, member_id=member.id, callup_id=c.id)
        await _reply(session, services, message_id, phone, r.message, now, hint=store.CLOSED)
        return SmsAnswer(store.CLOSED, r.message, c.id)
    reply = r.message + "\n" + (LATE_ASK if r.recorded_as == LATE and not eta else CHANGE_HINT)
    await store.settle(session, message_id, store.RECORDED, member_id=member.id, callup_id=c.id,
                       recorded_as=r.recorded_as)
    await _reply(session, services, message_id, phone, reply, now)
    return SmsAnswer(store.RECORDED, reply, c.id, r.recorded_as)
