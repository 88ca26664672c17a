"""知识库: the policy Q&A's entries — list and search, view with history, add and edit (administrators),
ask the bot a question to see what it would answer, and the questions it could not answer (问答缺口),
most-asked first, each turned into an alternate of an entry or a new entry in one step.

Edits are stored in the database over the YAML seed (:mod:`storage.kb`, :mod:`flows.policy_qa.overlay`),
checked by the YAML loader itself (the message shown at the form field it concerns), recorded with who
and when, and answered from at once: the engine is rebuilt after each save
(:func:`flows.policy_qa.flow.reload_engine`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import date
from typing import Any

from aiohttp import web
from sqlalchemy import delete

from bot.web.console.base import Console, field, form, int_or_none, see_other, staff_of
from flows.policy_qa import overlay
from flows.policy_qa.kb import ANSWER_SOFT_LIMIT
from storage import kb as store
from storage.console import audit
from storage.qa import QAGap, top_gaps

log = logging.getLogger("vetbot.console")

ORIGIN_WORDS = {"seed": "原始", "edited": "已修改", "new": "新增", "deleted": "已删除"}
ACTION_WORDS = {"create": "新增", "edit": "修改", "alternate": "加问法", "delete": "删除", "restore": "恢复原始"}
_SPLIT = re.compile(r"[,，、;；\s]+")
_ID_SAFE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _lines(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split("\n") if t.strip()))


def _words(text: str) -> list[str]:
    return list(dict.fromkeys(t for t in _SPLIT.split(text) if t))


def _links(text: str) -> list[Any]:
    out: list[Any] = []
    for line in _lines(text):
        parts = line.rsplit(None, 1)
        if len(parts) == 2:
            out.append({"title": parts[0], "url": parts[1]})
        else:
            out.append(parts[0])
    return out


def data_from_form(d: Any) -> dict[str, Any]:
    """The entry's fields as the form sent them, in the YAML schema's shape (empty ones left out)."""
    out: dict[str, Any] = {"question": field(d, "question", 300), "answer": field(d, "answer", 4000)}
    for key, parse, limit in (("alternates", _lines, 4000), ("tags", _words, 300), ("keywords", _words, 500),
                              ("links", _links, 2000)):
        value = parse(field(d, key, limit))
        if value:
            out[key] = value
    for key in ("source", "updated"):
        value = field(d, key, 300)
        if value:
            out[key] = value
    return {k: v for k, v in out.items() if v != ""}


def form_values(data: dict[str, Any]) -> dict[str, str]:
    """The other way: an entry's fields as the form's text boxes show them."""
    links = []
    for link in data.get("links") or []:
        if isinstance(link, dict):
            title, url = str(link.get("title") or ""), str(link.get("url") or "")
            links.append(url if not title or title == url else f"{title} {url}")
        else:
            links.append(str(link))
    return {"question": str(data.get("question") or ""), "answer": str(data.get("answer") or ""),
            "alternates": "\n".join(data.get("alternates") or []), "tags": "，".join(data.get("tags") or []),
            "keywords": "，".join(data.get("keywords") or []), "source": str(data.get("source") or ""),
            "updated": str(data.get("updated") or ""), "links": "\n".join(links)}


class KB:
    """What the pages read: the seed (cached by the files' times), the overlay, the merged list."""

    def __init__(self, c: Console) -> None:
        self.c = c
        self._seed: tuple[tuple[Any, ...], list[Any]] | None = None

    def seed(self) -> list[Any]:
        paths = [self.c.cfg.path(p) for p in self.c.cfg.qa.kb]
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.exists())
        if self._seed is None or self._seed[0] != stamp:
            self._seed = (stamp, overlay.seed(self.c.cfg))
        return self._seed[1]

    async def state(self) -> tuple[list[Any], list[store.OverlayRow]]:
        seed = await asyncio.to_thread(self.seed)
        async with self.c.db.session() as s:
            rows = await store.overlay(s)
        return seed, rows

    async def items(self) -> list[dict[str, Any]]:
        """Every entry for the list: id, fields, origin; deleted seed entries too (to restore)."""
        seed, rows = await self.state()
        out = [{"id": eid, "data": d, "origin": origin} for eid, d, origin in overlay.merged(seed, rows)]
        seed_by_id = {e.id: e for e in seed}
        out += [{"id": r.id, "data": overlay.entry_data(seed_by_id[r.id]), "origin": "deleted"}
                for r in rows if r.deleted and r.id in seed_by_id]
        return out

    async def find(self, eid: str) -> tuple[dict[str, Any] | None, str, int, dict[str, Any] | None]:
        """(fields now, origin, overlay version, the seed's fields) of one entry; fields None: no such entry."""
        seed, rows = await self.state()
        seed_e = next((e for e in seed if e.id == eid), None)
        seed_d = overlay.entry_data(seed_e) if seed_e is not None else None
        row = next((r for r in rows if r.id == eid), None)
        if row is None:
            return seed_d, "seed", 0, seed_d
        if row.deleted:
            return seed_d, "deleted", row.version, seed_d
        return dict(row.data), ("edited" if seed_e is not None else "new"), row.version, seed_d

    async def check(self, eid: str, data: dict[str, Any] | None) -> dict[str, str]:
        seed, rows = await self.state()
        return await asyncio.to_thread(overlay.check, seed, rows, eid, data)

    async def next_id(self) -> str:
        seed, rows = await self.state()
        used = {e.id for e in seed} | {r.id for r in rows}
        n = 1 + max((int(m.group(1)) for u in used if (m := re.fullmatch(r"kb_(\d+)", u))), default=0)
        return f"kb_{n:03d}"

    async def reload(self) -> None:
        """Answer from the saved knowledge base from now on (this process; others look within 30 s)."""
        from flows.policy_qa.flow import reload_engine

        await reload_engine(self.c.rt.services)


def _matches(item: dict[str, Any], q: str) -> bool:
    d = item["data"]
    hay = " ".join([item["id"], str(d.get("question", "")), str(d.get("answer", "")),
                    *map(str, d.get("alternates") or []), *map(str, d.get("tags") or []),
                    *map(str, d.get("keywords") or [])]).casefold()
    return all(w in hay for w in q.casefold().split())


def routes(app: web.Application, c: Console) -> None:
    kb = KB(c)

    def refuse(request: web.Request, back: str) -> web.Response:
        return c.message(request, 403, "没有权限", "只有管理员可以修改知识库。工作人员可以查看和试问。", back=back)

    async def index(request: web.Request) -> web.Response:
        q = field(request.query, "q", 50)  # type: ignore[arg-type]
        items = await kb.items()
        shown = [i for i in items if _matches(i, q)] if q else items
        async with c.db.session() as s:
            recent = await store.history(s, limit=8)
        return c.page(request, "console/kb.html", title="知识库", items=shown, total=len(items), q=q,
                      origin_words=ORIGIN_WORDS, action_words=ACTION_WORDS, recent=recent,
                      done=field(request.query, "done", 20))  # type: ignore[arg-type]

    async def show(request: web.Request) -> web.Response:
        eid = request.match_info["eid"]
        data, origin, version, seed_d = await kb.find(eid) if _ID_SAFE.match(eid) else (None, "", 0, None)
        if data is None:
            return c.message(request, 404, "没有这个条目", "没有找到这个条目。", back="/staff/kb")
        async with c.db.session() as s:
            changes = await store.history(s, eid, limit=30)
        return _form_page(request, eid=eid, values=form_values(data), errors={}, origin=origin, version=version,
                          changes=changes, is_new=False, has_seed=seed_d is not None, gap="")

    def _form_page(request: web.Request, *, status: int = 200, **ctx: Any) -> web.Response:
        staff = staff_of(request)
        title = "新增条目" if ctx.get("is_new") else f"条目 {ctx.get('eid')}"
        return c.page(request, "console/kb_entry.html", status=status, title=title, can_edit=staff.is_admin,
                      origin_words=ORIGIN_WORDS, action_words=ACTION_WORDS, limit=ANSWER_SOFT_LIMIT,
                      done=field(request.query, "done", 20), **ctx)  # type: ignore[arg-type]

    async def new(request: web.Request) -> web.Response:
        if not staff_of(request).is_admin:
            return refuse(request, "/staff/kb")
        question = field(request.query, "question", 300)  # type: ignore[arg-type]
        values = form_values({"question": question, "updated": date.today().isoformat()})
        return _form_page(request, eid="", values=values, errors={}, origin="new", version=0, changes=[],
                          is_new=True, has_seed=False, gap=field(request.query, "gap", 200))  # type: ignore[arg-type]

    async def save(request: web.Request) -> web.Response:
        staff = staff_of(request)
        eid = request.match_info.get("eid", "")
        back = f"/staff/kb/entry/{eid}" if eid else "/staff/kb"
        if not staff.is_admin:
            return refuse(request, back)
        d = await form(request)
        is_new = not eid
        data = data_from_form(d)
        values = {**form_values(data), **{k: field(d, k, 4000) for k in ("alternates", "tags", "keywords", "links")}}
        version = int_or_none(field(d, "version")) or 0
        gap = field(d, "gap", 200)
        if is_new:
            eid = field(d, "id", 64) or await kb.next_id()
            current, origin, _, seed_d = await kb.find(eid)
            errors = {"id": "这个编号已经有别的条目在用，请换一个（或留空自动编号）。"} if current is not None or \
                origin == "deleted" else {}
        else:
            current, origin, _, seed_d = await kb.find(eid) if _ID_SAFE.match(eid) else (None, "", 0, None)
            if current is None:
                return c.message(request, 404, "没有这个条目", "没有找到这个条目。", back="/staff/kb")
            errors = {}
        errors = errors or await kb.check(eid, data)
        ctx = dict(eid=eid if not is_new else field(d, "id", 64), values=values, origin=origin, version=version,
                   is_new=is_new, has_seed=seed_d is not None, gap=gap)
        if errors:
            async with c.db.session() as s:
                changes = [] if is_new else await store.history(s, eid, limit=30)
            return _form_page(request, status=400, errors=errors, changes=changes, **ctx)
        now = c.now()
        try:
            async with c.db.session() as s:
                new_version = await store.save_entry(s, eid, data, action="create" if is_new else "edit",
                                                     before=current, expected_version=version, by=staff.openid,
                                                     by_name=staff.name, now=now)
                if gap:
                    await s.execute(delete(QAGap).where(QAGap.norm == gap))
                await audit(s, actor=staff.openid, actor_name=staff.name, action="kb.create" if is_new else "kb.edit",
                            now=now, target_type="kb_entry", target_id=eid,
                            summary=f"{'新增' if is_new else '修改'}知识库条目 {eid}：{data['question'][:60]}",
                            detail={"version": new_version, "changed": _changed(current, data)})
        except store.Conflict:
            async with c.db.session() as s:
                changes = await store.history(s, eid, limit=30)
            return _form_page(request, status=409, changes=changes, **{**ctx, "version": version},
                              errors={"_": "保存前，别人刚刚改过这一条。为免覆盖对方的修改，这次没有保存。"
                                           "请记下您的改动，刷新页面后再改。"})
        await kb.reload()
        return see_other(f"/staff/kb/entry/{eid}?done={'created' if is_new else 'saved'}")

    async def remove(request: web.Request) -> web.Response:
        """Delete an entry (a seed entry is hidden and can be restored) or restore the seed's version."""
        staff = staff_of(request)
        eid = request.match_info["eid"]
        back = f"/staff/kb/entry/{eid}"
        if not staff.is_admin:
            return refuse(request, back)
        d = await form(request)
        what = field(d, "do", 10)
        version = int_or_none(field(d, "version")) or 0
        current, origin, _, seed_d = await kb.find(eid) if _ID_SAFE.match(eid) else (None, "", 0, None)
        if current is None or what not in ("delete", "restore") or (what == "restore" and origin == "seed") or \
                (what == "delete" and origin == "deleted"):
            return c.message(request, 400, "无法操作", "这个条目现在不能这样操作，请刷新后再试。", back=back)
        if what == "delete" and field(d, "confirm") != "1":  # one more step: a slip of the mouse deletes nothing
            return c.page(request, "console/kb_confirm.html", title="删除条目", eid=eid, version=version,
                          question=current.get("question", eid), has_seed=seed_d is not None)
        if what == "restore":
            errors = await kb.check(eid, seed_d) if seed_d is not None else {}
        else:
            errors = await kb.check(eid, None)
        if errors:
            return c.message(request, 400, "无法操作", "；".join(errors.values()), back=back)
        now = c.now()
        try:
            async with c.db.session() as s:
                if what == "restore":
                    await store.restore_seed(s, eid, before=current, expected_version=version, by=staff.openid,
                                             by_name=staff.name, now=now)
                else:
                    await store.save_entry(s, eid, None, action="delete", before=current, expected_version=version,
                                           by=staff.openid, by_name=staff.name, now=now)
                word = "恢复原始内容" if what == "restore" else "删除"
                await audit(s, actor=staff.openid, actor_name=staff.name, action=f"kb.{what}", now=now,
                            target_type="kb_entry", target_id=eid, summary=f"{word}知识库条目 {eid}")
        except store.Conflict:
            return c.message(request, 409, "没有保存", "别人刚刚改过这一条，请刷新后再试。", back=back)
        await kb.reload()
        return see_other(f"/staff/kb/entry/{eid}?done={what}d" if what == "restore" or origin != "new"
                         else "/staff/kb?done=deleted")

    async def preview(request: web.Request) -> web.Response:
        """试问: what the bot would answer — the live engine's own decision, nothing recorded."""
        from flows.policy_qa.flow import _answer_text, engine_of

        q = field(request.query, "q", 300)  # type: ignore[arg-type]
        result = topic = None
        if q:
            eng = await engine_of(c.rt.services)
            topic = await asyncio.to_thread(eng.topic, q)
            if not topic:
                result = await asyncio.to_thread(eng.ask, q)
        reply = _answer_text(result.entry) if result is not None and result.entry is not None and \
            result.decision == "answer" else ""
        return c.page(request, "console/kb_preview.html", title="试问", q=q, result=result, topic=topic,
                      reply=reply)

    async def gaps(request: web.Request) -> web.Response:
        async with c.db.session() as s:
            rows = await top_gaps(s, 100)
        items = await kb.items()
        entries = [(i["id"], i["data"].get("question", "")) for i in items if i["origin"] != "deleted"]
        return c.page(request, "console/kb_gaps.html", title="问答缺口", gaps=rows, entries=entries,
                      questions=dict(entries), done=field(request.query, "done", 20))  # type: ignore[arg-type]

    async def add_alternate(request: web.Request) -> web.Response:
        staff = staff_of(request)
        if not staff.is_admin:
            return refuse(request, "/staff/kb/gaps")
        d = await form(request)
        norm, eid = field(d, "gap", 200), field(d, "entry", 64)
        async with c.db.session() as s:
            gap = await s.get(QAGap, norm) if norm else None
            example = gap.example.strip()[:300] if gap is not None else ""
        current, origin, version, _ = await kb.find(eid) if _ID_SAFE.match(eid) else (None, "", 0, None)
        if gap is None or current is None or origin == "deleted":
            return c.message(request, 400, "无法添加", "请从列表里选一个问题和一个条目再点“加为问法”。",
                             back="/staff/kb/gaps")
        data = {**current, "alternates": list(dict.fromkeys([*(current.get("alternates") or []), example]))}
        errors = await kb.check(eid, data)
        if errors:
            return c.message(request, 400, "无法添加", "；".join(errors.values()), back="/staff/kb/gaps")
        now = c.now()
        try:
            async with c.db.session() as s:
                await store.save_entry(s, eid, data, action="alternate", before=current, expected_version=version,
                                       by=staff.openid, by_name=staff.name, now=now)
                await s.execute(delete(QAGap).where(QAGap.norm == norm))
                await audit(s, actor=staff.openid, actor_name=staff.name, action="kb.alternate", now=now,
                            target_type="kb_entry", target_id=eid,
                            summary=f"把“{example[:60]}”加为条目 {eid} 的问法")
        except store.Conflict:
            return c.message(request, 409, "没有保存", "别人刚刚改过这一条，请刷新后再试。", back="/staff/kb/gaps")
        await kb.reload()
        return see_other("/staff/kb/gaps?done=alternate")

    app.router.add_get("/staff/kb", index)
    app.router.add_get("/staff/kb/new", new)
    app.router.add_post("/staff/kb/new", save)
    app.router.add_get("/staff/kb/preview", preview)
    app.router.add_get("/staff/kb/gaps", gaps)
    app.router.add_post("/staff/kb/gaps/alternate", add_alternate)
    app.router.add_get("/staff/kb/entry/{eid}", show)
    app.router.add_post("/staff/kb/entry/{eid}", save)
    app.router.add_post("/staff/kb/entry/{eid}/remove", remove)


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    before = before or {}
    return [k for k in store.FIELDS if before.get(k) != after.get(k)]
