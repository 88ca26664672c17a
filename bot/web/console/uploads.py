"""导入: the volunteer roster, the martyr roll and job postings uploaded as CSV files (UTF-8, UTF-8 with
BOM, GBK/GB18030 as Excel and WPS save them).

Three steps, each a page: choose the file → **检查** (every row checked by the same service the CLI uses,
:func:`flows.imports.import_csv` with ``dry_run``; problems listed by line and column, or what would
change: counts and a sample) → **确认导入** (the same file checked again and written in one transaction;
nothing is half-imported). Between the two steps the file travels in the confirmation form itself,
signed with a key bound to the staff member's session, so no upload is kept on the server and any
process behind a load balancer can finish it. Files are limited to ``console.upload_max_kb``; each
import is in the audit log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from bot.csvfile import ACTION_ZH, ImportReport
from bot.web.console.base import Console, Staff, field, form, staff_of
from flows.imports import KINDS, ImportFailed, import_csv
from storage.console import audit

#: Rows of a dry run shown one by one (the changes first).
SAMPLE = 30
HELP = {
    "roster": "应急队伍的队员名单：每行一名队员。已有的队员（按手机号）会更新，新的会加入；队伍不存在时自动新建。",
    "martyrs": "英烈名录：每行一位英烈。已有的会更新，新的会加入。",
    "jobs": "招聘岗位：每行一个岗位。已有的（单位、岗位、地点相同）会更新；订阅了的退役军人会收到新岗位提醒。",
}


def _schema(kind: str) -> Any:
    if kind == "roster":
        from flows.callup.roster import SCHEMA
    elif kind == "martyrs":
        from flows.memorial.roll import SCHEMA
    else:
        from flows.jobs.csvimport import SCHEMA
    return SCHEMA


def _template_header(kind: str) -> str:
    """The header of a blank file, in the Chinese names staff know (each is an accepted alias)."""
    return ",".join(c.label if c.label in c.aliases else c.name for c in _schema(kind).columns)


def _options(kind: str, d: Any) -> dict[str, Any]:
    if kind != "jobs":
        return {}
    return {"default_source": field(d, "default_source", 100), "skip_expired": field(d, "skip_expired") == "1",
            "notify": field(d, "notify") == "1"}


def _signature(config: Any, staff: Staff, kind: str, options: dict[str, Any], data: bytes) -> str:
    """Binds the confirmation form's file to this session, kind and options (no other file can be
    confirmed with it, nor by another session)."""
    from bot.links import _secret

    msg = b"\x00".join([b"upload", staff.session_hash.encode(), kind.encode(),
                        json.dumps(options, sort_keys=True).encode(), hashlib.sha256(data).hexdigest().encode()])
    return hmac.new(_secret(config), msg, hashlib.sha256).hexdigest()


def routes(app: web.Application, c: Console) -> None:
    limit = c.cfg.console.upload_max_kb * 1024

    def kind_of(request: web.Request) -> str | None:
        kind = request.match_info["kind"]
        return kind if kind in KINDS else None

    def choose_page(request: web.Request, kind: str, *, status: int = 200, error: str = "",
                    options: dict[str, Any] | None = None) -> web.Response:
        return c.page(request, "console/import_choose.html", status=status, title=f"导入{KINDS[kind]}", kind=kind,
                      what=KINDS[kind], help=HELP[kind], columns=_schema(kind).columns, error=error,
                      max_kb=c.cfg.console.upload_max_kb,
                      options=options or {"default_source": "", "skip_expired": False, "notify": True})

    async def index(request: web.Request) -> web.Response:
        return c.page(request, "console/imports.html", title="导入", kinds=KINDS, help=HELP,
                      max_kb=c.cfg.console.upload_max_kb)

    async def choose(request: web.Request) -> web.Response:
        kind = kind_of(request)
        if kind is None:
            return c.message(request, 404, "没有这种导入", "请从“导入”页面选择要导入的内容。", back="/staff/imports")
        return choose_page(request, kind)

    async def template(request: web.Request) -> web.StreamResponse:
        kind = kind_of(request)
        if kind is None:
            return c.message(request, 404, "没有这种导入", "请从“导入”页面选择。", back="/staff/imports")
        body = "\ufeff" + _template_header(kind) + "\r\n"  # with a BOM: Excel opens it as UTF-8
        name = f"{kind}-template.csv"
        return web.Response(body=body.encode("utf-8"), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def run(request: web.Request, kind: str, data: bytes, source: str, options: dict[str, Any],
                  dry_run: bool) -> ImportReport | str:
        staff = staff_of(request)
        now = c.now()
        try:
            async with c.db.session() as s:
                report = await import_csv(s, c.cfg, kind, data, now=now, source=source, dry_run=dry_run, **options)
                if report.applied:
                    counts = report.counts
                    await audit(s, actor=staff.openid, actor_name=staff.name, action=f"import.{kind}", now=now,
                                target_type="import", target_id=kind,
                                summary=f"导入{KINDS[kind]}（{source}）：" + "，".join(
                                    f"{ACTION_ZH[a]} {n}" for a, n in counts.items() if n),
                                detail={"file": source, "sha256": hashlib.sha256(data).hexdigest(),
                                        "encoding": report.encoding, "counts": counts, **report.details,
                                        **({"options": options} if options else {})})
                return report
        except ImportFailed as e:
            return str(e)

    def report_page(request: web.Request, kind: str, report: ImportReport, source: str, data: bytes,
                    options: dict[str, Any]) -> web.Response:
        staff = staff_of(request)
        changed = [p for p in report.preview if p.action != "unchanged"]
        sample = (changed + [p for p in report.preview if p.action == "unchanged"])[:SAMPLE]
        ctx: dict[str, Any] = {}
        if report.ok and not report.applied:
            ctx = {"payload": base64.b64encode(data).decode(), "sig": _signature(c.cfg, staff, kind, options, data)}
        return c.page(request, "console/import_report.html", status=200 if report.ok else 400,
                      title=f"导入{KINDS[kind]}", kind=kind, what=KINDS[kind], report=report, source=source,
                      sample=sample, more=len(report.preview) - len(sample), action_zh=ACTION_ZH, options=options,
                      lines=len({e.line for e in report.errors}), **ctx)

    async def check(request: web.Request) -> web.Response:
        kind = kind_of(request)
        if kind is None:
            return c.message(request, 404, "没有这种导入", "请从“导入”页面选择。", back="/staff/imports")
        d = await form(request)
        options = _options(kind, d)
        upload = d.get("file")
        if upload is None or isinstance(upload, str) or not getattr(upload, "filename", ""):
            return choose_page(request, kind, status=400, error="请先点“选择文件”选一个 CSV 文件。", options=options)
        data = upload.file.read(limit + 1)
        source = str(upload.filename).replace("\\", "/").rsplit("/", 1)[-1][:100]
        if len(data) > limit:
            return choose_page(request, kind, status=413, options=options,
                               error=f"文件太大（超过 {c.cfg.console.upload_max_kb} KB）。请把文件分成几份再导入。")
        if not data:
            return choose_page(request, kind, status=400, error="这个文件是空的。", options=options)
        result = await run(request, kind, data, source, options, dry_run=True)
        if isinstance(result, str):
            return choose_page(request, kind, status=500, error=result, options=options)
        return report_page(request, kind, result, source, data, options)

    async def apply(request: web.Request) -> web.Response:
        kind = kind_of(request)
        if kind is None:
            return c.message(request, 404, "没有这种导入", "请从“导入”页面选择。", back="/staff/imports")
        d = await form(request)
        options = _options(kind, d)
        back = f"/staff/imports/{kind}"
        payload = d.get("payload")
        try:
            data = base64.b64decode(payload.strip().encode(), validate=True) if isinstance(payload, str) else b""
        except (binascii.Error, ValueError):
            data = b""
        sig = field(d, "sig", 100)
        if not data or len(data) > limit or not hmac.compare_digest(sig, _signature(c.cfg, staff_of(request), kind,
                                                                                    options, data)):
            return c.message(request, 400, "无法导入", "确认页已过期或不完整，没有导入任何数据。请重新选择文件检查后再导入。",
                             back=back)
        source = field(d, "source", 100)
        result = await run(request, kind, data, source, options, dry_run=False)
        if isinstance(result, str):
            return c.message(request, 500, "没有导入", result, back=back)
        return report_page(request, kind, result, source, data, options)

    app.router.add_get("/staff/imports", index)
    app.router.add_get("/staff/imports/{kind}", choose)
    app.router.add_get("/staff/imports/{kind}/template.csv", template)
    app.router.add_post("/staff/imports/{kind}/check", check)
    app.router.add_post("/staff/imports/{kind}/apply", apply)
