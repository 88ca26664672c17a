"""``vetbot templates preview PURPOSE``: what a person sees of a push, drawn like WeChat's card.

A sample push of the purpose (the same data fields the feature fills: a call-up's title, place and
time; a job alert's title and company line …) is rendered exactly as the outbox sender renders it
(:class:`bot.outbox.TemplateRenderer`, WeChat's rules of today: keyword fields only, each shortened to
its type). Every value that had to be cut, left out or rewritten is listed, so a template that drops
what people must read is noticed before a call-up goes out.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from bot.commands.common import add_config, config_of, emit

HELP = """\
Show the card a person gets for a push of PURPOSE: the template message, and the 订阅通知 where one is
configured, rendered from a sample push under WeChat's rules (keyword fields only, at most 20
characters each; no first/remark, no line breaks, no emoji). Every value that was shortened is listed.

  vetbot templates preview callup -c vetbot.yaml
  vetbot templates preview job_alert -c vetbot.yaml --set title="新岗位：物业保安（夜班，包吃住）"
  vetbot templates preview all -c vetbot.yaml --json
"""

#: Sample pushes, with the data fields each feature fills (see flows/*): what a real push looks like.
SAMPLES: dict[str, dict[str, Any]] = {
    "callup": {"text": "【应急集结】防汛·城南河段抢险\n张建国，您好！\n地点：城南水文站东侧二号堤坝\n…",
               "data": {"title": "【应急集结】防汛·城南河段防汛抢险（第二批）", "place": "城南水文站东侧二号堤坝集合点",
                        "time": "07月01日 21:30", "content": "需要20人（其中 驾驶2 医护1）。请点击回复：到 / 晚到 / 不能到",
                        "phone": "13800000000"},
               "url": "https://example.gov.cn/r/TOKEN"},
    "callup_progress": {"text": "【集结进度】防汛·城南河段抢险 已确认 12/20 …",
                        "data": {"title": "【集结进度】防汛·城南河段防汛抢险",
                                 "content": "张建国 回复：到 已确认 12/20，晚到 2，不能到 3，未回复 40",
                                 "time": "07月01日 21:42"},
                        "url": "https://example.gov.cn/callup/roster/TOKEN"},
    "job_alert": {"text": "【新岗位】物业保安 …",
                  "data": {"title": "新岗位：物业保安（夜班）", "content": "大竹县某物业管理有限公司｜竹阳街道｜3500-4500元/月",
                           "time": "截止2026年5月31日", "company": "大竹县某物业管理有限公司", "job": "物业保安（夜班）",
                           "location": "竹阳街道", "salary": "3500-4500元/月", "deadline": "2026年5月31日",
                           "job_type": "全职", "veteran_priority": "是"},
                  "url": "https://example.gov.cn/jobs/p/TOKEN"},
    "memorial_reminder": {"text": "【清明节】今天是清明节…\n回复“祭英烈”即可献花、寄语。",
                          "data": {"title": "清明节", "content": "今天是清明节，欢迎来云端祭英烈，献花寄语，缅怀先烈。",
                                   "time": "4月5日"},
                          "url": "https://example.gov.cn/m/?t=TOKEN"},
    "broadcast": {"text": "【工作通知】本周五下午3点在局会议室召开退役军人座谈会，请准时参加。",
                  "data": {"title": "工作通知", "content": "本周五下午3点在局会议室召开退役军人座谈会，请准时参加。",
                           "time": "04月04日 09:00"}},
    "late_reply": {"text": "优待证在户籍所在地的乡镇（街道）退役军人服务站申请，带上身份证和退役证。"},
    "ticket_reply": {"text": "您的留言（编号 12）已有回复：\n已为您登记，工作人员明天上午电话联系您。",
                     "data": {"title": "留言回复", "content": "已为您登记，工作人员明天上午电话联系您。"}},
    "notice": {"text": "您给黄继光烈士写的寄语已审核通过，已在网上纪念馆展示。谢谢您！",
               "data": {"title": "寄语已展示", "content": "您给黄继光烈士写的寄语已审核通过，已在网上纪念馆展示。谢谢您！",
                        "time": "04月04日 10:15"},
               "url": "https://example.gov.cn/m/1?t=TOKEN"},
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot templates preview``."""
    p = sub.add_parser("templates", help="模板消息/订阅通知：预览用户看到的卡片", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="templates_cmd", required=True)
    pv = tsub.add_parser("preview", help="show what a person sees of a push of PURPOSE (or all)", description=HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(pv)
    pv.add_argument("purpose", help="push purpose (callup, job_alert, …) or 'all'")
    pv.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a data field of the sample push (title, place, time, content, …)")
    pv.add_argument("--json", action="store_true", help="machine-readable output")
    pv.set_defaults(func=_preview)


def preview(config: Any, purpose: str, overrides: dict[str, str] | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """The rendered cards of ``purpose``'s sample push: ``{"purpose", "template_allowed", "cards": [...]}``;
    each card has ``channel``, ``template_id``, ``title``, ``fields`` [{name, label, value}], ``url`` and
    ``notes`` (cuts first), plus ``warnings`` (what was cut or left out)."""
    from bot.outbox import TEMPLATE_BASIS, TemplateRenderer, template_allowed
    from bot.template_rules import card

    sample = SAMPLES.get(purpose, {"text": "示例内容", "data": {"title": "示例标题", "content": "示例内容"}})
    payload = {"text": sample.get("text", ""), "data": {**sample.get("data", {}), **(overrides or {})}}
    if sample.get("url"):
        payload["url"] = sample["url"]
    when = now or datetime(2026, 4, 4, 1, 0)
    renderer = TemplateRenderer(config.templates, config.bot.timezone, config.template_rules.rules())
    spec = config.templates[purpose]
    cards = []
    variants = []
    if spec.template_id:
        variants.append(("template", renderer.render(purpose, payload, when), spec.title, spec.labels))
    sub = renderer.subscribe_spec(purpose)
    if sub is not None:
        variants.append((f"subscribe ({sub.kind})", renderer.render_subscribe(purpose, payload, when),
                         sub.title or spec.title, sub.labels or spec.labels))
    for channel, r, title, labels in variants:
        fields = [{"name": n, "label": labels.get(n, n), "value": v} for n, v in r.data.items()]
        url = r.url or "(the push's full text: /msg/…)"
        cards.append({
            "channel": channel, "template_id": r.template_id, "title": title or "(template title)",
            "fields": fields, "url": url, "notes": r.notes,
            "drawing": card(title or "(template title)", [(f["label"], f["value"]) for f in fields], url),
        })
    return {"purpose": purpose, "basis": TEMPLATE_BASIS.get(purpose, "unrequested"),
            "template_allowed": template_allowed(purpose, payload), "cards": cards}


def _render(result: dict[str, Any]) -> str:
    basis = {"warning": "a disaster warning: may reach anyone",
             "requested": "the person asked for it: allowed outside the chat window",
             "unrequested": "nobody asked for it: no template message (订阅通知 with consent, or SMS)"}
    lines = [f"templates.{result['purpose']} — {basis.get(result['basis'], result['basis'])}"]
    if not result["cards"]:
        lines.append("  (no template message and no 订阅通知 configured for this purpose)")
    for c in result["cards"]:
        lines.append(f"\n{c['channel']}  {c['template_id']}")
        lines.append(c["drawing"])
        lines.append(f"  link: {c['url']}")
        for note in c["notes"]:
            lines.append(f"  ! {note}")
    return "\n".join(lines)


def _preview(args: argparse.Namespace) -> int:
    import logging

    from storage.outbox import PURPOSES

    logging.getLogger("vetbot.outbox").setLevel(logging.ERROR)  # the notes below say it all
    cfg = config_of(args)
    overrides: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"vetbot: --set wants FIELD=VALUE (got {item!r})", file=sys.stderr)
            return 2
        overrides[name.strip()] = value
    purposes = [p for p in PURPOSES if p in cfg.templates] if args.purpose == "all" else [args.purpose]
    for p in purposes:
        if p not in cfg.templates:
            known = ", ".join(sorted(cfg.templates)) or "none"
            print(f"vetbot: no templates.{p} in the config (configured: {known})", file=sys.stderr)
            return 2
    results = [preview(cfg, p, overrides) for p in purposes]
    if args.json:
        for r in results:
            for c in r["cards"]:
                c.pop("drawing", None)
    emit(results if args.purpose == "all" else results[0], args.json,
         lambda d: "\n\n".join(_render(r) for r in (d if isinstance(d, list) else [d])))
    return 0
