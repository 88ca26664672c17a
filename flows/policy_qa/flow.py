"""政策问答 in chat: answer, offer a numbered list when unsure, decline honestly when the knowledge base
has no answer (offering 人工 in one tap), and count unanswered questions for staff.

The flow is also the fallback for any text no other intent claims, so it must never trap a user:
after an answer it waits only for the optional follow-ups (相关 / a number); anything else is routed
afresh as a new request (``ctx.reroute``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flows.api import Context, Flow, Services, flow, normalize, on_startup, strip_fillers
from storage.qa import record_ask, record_gap

log = logging.getLogger("vetbot.qa")

TRIGGERS = {normalize(t) for t in ("政策问答", "政策咨询", "我要咨询", "咨询政策", "问政策", "我要问政策")}
RELATED = {normalize(t) for t in ("相关", "相关问题", "更多", "还有呢")}


def _load(services: Services, rows: Any = (), previous: Any = None) -> Any:
    from flows.policy_qa.engine import QAEngine

    cfg = services.config
    q = cfg.qa
    cache = {"cache_dir": cfg.path(q.cache_dir)} if q.cache_dir and _takes_cache_dir() else {}
    if rows:  # the console's edits over the YAML seed (flows.policy_qa.overlay)
        from flows.policy_qa.overlay import build_engine

        return build_engine(cfg, rows, previous, **cache)
    return QAEngine.from_files(
        [cfg.path(p) for p in q.kb],
        synonyms_path=cfg.path(q.synonyms) if q.synonyms else None,
        userdict_path=cfg.path(q.userdict) if q.userdict else None,
        use_encoder=q.use_encoder,
        **cache,
    )


def _takes_cache_dir() -> bool:
    import inspect

    from flows.policy_qa.engine import QAEngine

    return "cache_dir" in inspect.signature(QAEngine.from_files).parameters


T = TypeVar("T")

# Matching a question runs here, never on the event loop. One thread: the sentence encoder (a C library
# called through ctypes) releases the GIL while it computes, so the loop keeps serving other messages;
# the Python parts (jieba, BM25, rapidfuzz) hold the GIL in short slices, and with one thread only one
# question at a time competes with the loop for it (questions queue here instead of piling up threads).
_QA_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vetbot-qa")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the Q&A worker thread (for engine calls from any flow or router:
    ``await off_loop(engine.ask, text)``, ``await off_loop(engine.encoder.embed_query, text)``)."""
    return await asyncio.get_running_loop().run_in_executor(_QA_POOL, fn, *args)


class Prefetch:
    """Match a free-text message on the Q&A thread *before* its turn starts (the dispatcher awaits it
    outside the turn queue, as it does for speech recognition). On SQLite, turns run one after another in
    one transaction; a question matched inside its turn would hold every turn queued behind it for the
    encoder's 15-50 ms. Texts shorter than :attr:`MIN_CHARS` (menu keys, digits, 帮助, 取消) are left alone;
    a longer intent message pays one match off the loop and the result is simply not used."""

    MIN_CHARS = 5
    KEEP = 512

    def __init__(self, services: Services) -> None:
        self.services = services
        self._pending: dict[str, asyncio.Future[Any]] = {}

    def __call__(self, text: str) -> asyncio.Future[Any] | None:
        eng = self.services.qa_engine
        t = (text or "").strip()
        if eng is None or len(strip_fillers(normalize(t))) < self.MIN_CHARS or t.isdigit():
            return None
        matcher = self.services.matcher
        if matcher is not None and matcher.exact(t, set()) is not None:
            return None  # a command an exact rule takes (献花 示例烈士0012, 请假 三天): not a question
        fut = self._pending.get(t)
        if fut is None:
            fut = asyncio.ensure_future(off_loop(eng.ask, t))
            self._pending[t] = fut
            while len(self._pending) > self.KEEP:
                self._pending.pop(next(iter(self._pending)))
        return fut

    def take(self, text: str) -> asyncio.Future[Any] | None:
        """The prefetched match of ``text`` (once), or None."""
        return self._pending.pop((text or "").strip(), None)


async def ask(services: Services, text: str) -> Any:
    """``QAEngine.ask`` for ``text`` off the event loop (the process's engine, loaded on first use)."""
    eng = await engine_of(services)
    return await off_loop(eng.ask, text)


# One engine per process and set of files: loading embeds the whole knowledge base (seconds), so
# runtimes built again in the same process (tests, the in-process chat) reuse it. Only the newest
# overlay's engine is kept per set of files (edits must not pile up engines).
_ENGINES: dict[tuple[Any, ...], tuple[str, Any]] = {}
_ENGINE_LOCK = asyncio.Lock()
#: With several processes on PostgreSQL, each looks this often whether the console changed the KB.
RECHECK_S = 30.0


def _engine_key(services: Services) -> tuple[Any, ...]:
    cfg = services.config
    q = cfg.qa
    return (tuple(str(cfg.path(p)) for p in q.kb), str(cfg.path(q.synonyms)) if q.synonyms else "",
            str(cfg.path(q.userdict)) if q.userdict else "", q.use_encoder)


async def engine_of(services: Services) -> Any:
    """The process's Q&A engine, loaded once (in a thread: loading embeds the whole knowledge base).
    On PostgreSQL (several processes) it is rebuilt when another process saved a console edit."""
    eng = services.qa_engine
    if eng is not None:
        seen = services.qa_engine_seen
        db = services.db
        if db is None or db.is_sqlite or seen is None or time.monotonic() - seen[1] < RECHECK_S:
            return eng  # SQLite: one process, and the console reloads it right after saving
        from flows.policy_qa.overlay import digest, load_rows

        rows = await load_rows(db)
        if digest(rows) == seen[0]:
            services.qa_engine_seen = (seen[0], time.monotonic())
            return eng
        return await reload_engine(services, rows, force=False)
    return await reload_engine(services, force=False)


async def reload_engine(services: Services, rows: Any = None, *, force: bool = True) -> Any:
    """Build the engine again from the YAML seed and the console's saved edits (:mod:`storage.kb`) and
    put it in place, for this process: the next question uses it, no restart. It is built and calibrated
    off the loop while the previous one keeps answering. ``force=False`` reuses the process's engine
    when the edits are the ones it was built with (a YAML seed changed on disk needs ``force``). Returns
    the engine. Raises :class:`flows.policy_qa.kb.KBError` (file, line, hint) when the seed is broken;
    the previous engine then stays."""
    from flows.policy_qa.overlay import digest, load_rows

    if rows is None:
        rows = await load_rows(services.db)
    key, dig = _engine_key(services), digest(rows)
    async with _ENGINE_LOCK:
        have = _ENGINES.get(key)
        if force or have is None or have[0] != dig:
            previous = have[1] if have is not None else None  # lends its embeddings to the new one
            _ENGINES[key] = (dig, await asyncio.to_thread(_load, services, rows, previous))
            log.info("qa: knowledge base loaded, %d entries", len(_ENGINES[key][1].entries))
        eng = _ENGINES[key][1]
    services.qa_engine = eng
    services.qa_engine_seen = (dig, time.monotonic())
    return eng


@on_startup
async def _preload(services: Services) -> None:
    """Validate and load the knowledge base at start (a KB typo stops start-up with file, line and hint
    instead of failing on the first question). Always, not only when Q&A is the fallback: the menu
    reaches it too, and loading it on the first question would take seconds of CPU from every turn
    being served at that moment."""
    await engine_of(services)
    services.qa_prefetch = Prefetch(services)


def _answer_text(entry: Any) -> str:
    return f"{entry.answer}\n\n（回复“相关”查看相关问题；其他问题请直接输入）"


@flow
class PolicyQA(Flow):
    name = "policy_qa"
    title = "政策问答"

    async def start(self, ctx: Context) -> None:
        question = ctx.intent_slots.get("q") or (ctx.text if ctx.entry in ("text", "fallback") else "")
        if not question or normalize(question) in TRIGGERS:
            await ctx.ask("question", "请直接输入您想咨询的问题，例如：\n优待证怎么办理？\n退役金怎么算？\n（回复“取消”退出）")
            return
        await self._ask_engine(ctx, question)

    async def prompt(self, ctx: Context, step: str) -> None:
        await ctx.ask("question", "请直接输入您想咨询的问题。（回复“取消”退出）")

    async def step(self, ctx: Context) -> None:
        if ctx.step == "question":
            await self._ask_engine(ctx, ctx.text)
            return
        eng = await engine_of(ctx.services)
        if ctx.picked is not None:
            if ctx.picked == "__ticket__":
                await self._ticket(ctx)
                return
            try:
                entry = eng.entry(str(ctx.picked))
            except KeyError:  # staff removed the entry in the console since the list was shown
                ctx.say("这个问题的答案刚刚更新过，请重新输入您的问题。")
                ctx.end()
                return
            self._show(ctx, entry)
            return
        if ctx.step == "answered" and normalize(ctx.text) in RELATED:
            last = ctx.slots.get("last")
            related = eng.related(last, 3) if last else []
            if not related:
                ctx.say("暂时没有相关问题。请直接输入您的问题。")
                ctx.end()
                return
            ctx.step = "pick"
            ctx.choose([(e.question, e.id) for e in related], header="相关问题：", footer="回复数字查看。")
            return
        ctx.reroute()

    def _show(self, ctx: Context, entry: Any) -> None:
        ctx.say(_answer_text(entry))
        ctx.slots["last"] = entry.id
        ctx.step = "answered"

    async def _ask_engine(self, ctx: Context, question: str) -> None:
        eng = await engine_of(ctx.services)
        topic = await off_loop(eng.topic, question)
        if topic:
            # A bare topic (抚恤, 优待证, 上学): show what can be asked about it rather than guess one answer.
            await record_ask(ctx.session, "list", None, ctx.now)
            ctx.step = "pick"
            ctx.choose([(e.question, e.id) for e in topic], header=f"关于“{question.strip()[:10]}”，您想了解哪一项？",
                       footer="回复数字查看；也可以把问题说完整，例如“优待证怎么办理”。")
            return
        pre = ctx.services.qa_prefetch
        fut = pre.take(question) if pre is not None else None
        try:
            result = await fut if fut is not None else None
        except Exception:
            result = None  # the early match failed: ask again, here, so its error surfaces in this turn
        if result is None:
            result = await off_loop(eng.ask, question)
        norm = strip_fillers(normalize(question))
        # The console's daily figures (answered / offered a list / declined).
        decided = ("answer" if result.decision == "answer" and result.entry is not None else
                   "list" if result.decision == "ambiguous" and result.candidates else "unknown")
        await record_ask(ctx.session, decided, result.entry.id if decided == "answer" else None, ctx.now)
        if result.decision == "answer" and result.entry is not None:
            log.info("qa answer id=%s confidence=%.2f", result.entry.id, result.confidence)
            self._show(ctx, result.entry)
            return
        ctx.slots["question"] = question[:500]
        if result.decision == "ambiguous" and result.candidates:
            await record_gap(ctx.session, norm, question, "ambiguous", result.candidates[0].id, ctx.now)
            ctx.step = "pick"
            ctx.choose([(c.question, c.id) for c in result.candidates[:3]],
                       header="您是想问：", footer="回复数字查看；都不是请换个说法，或回复“人工”。")
            return
        await record_gap(ctx.session, norm, question, "unknown", None, ctx.now)
        ctx.step = "unknown"
        ctx.say("抱歉，这个问题政策库里还没有收录，我不想答错耽误您的事。")
        ctx.choose([("请工作人员回答这个问题（人工）", "__ticket__")], footer="也可以换个说法再问。")

    async def _ticket(self, ctx: Context) -> None:
        question = ctx.slots.get("question") or ""
        from flows.tickets import open_ticket

        await open_ticket(ctx, question or "（问题没有记下）",
                          source={"flow": "policy_qa", "title": "政策问答", "question": question})
