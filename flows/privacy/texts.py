"""What the privacy features say, in short Simplified Chinese, and how each kind of stored data is
summed up in one line of 我的数据 (a table nobody wrote a summary for still shows as "标签：N 条")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flows.api import fmt_local

NOTICE_PATH = "/privacy"
MINE_PATH = "/privacy/mine"

CONSENT_FOOTER = "回复 1 同意，2 不同意。完整说明：{url}"
CONSENT_REASK = "请回复 1 同意，或 2 不同意（回复“取消”退出）。"
CONSENT_THANKS = "好的，谢谢您！"
DECLINED = ("好的，不登记也没关系。政策问答、云端祭英烈、找工作、人工留言都可以照常使用，"
            "回复“帮助”查看。以后想登记，随时回复“我的信息”。")
NOTICE_MORE = "完整说明：{url}\n回复“我的数据”查看我们保存的您的信息，回复“注销”删除。"

ERASE_CONFIRM = "删除后不能恢复。确认删除请回复“确认”；不删除请回复“取消”。"
ERASE_REASK = "确认删除请回复“确认”；不删除请回复“取消”。"
ERASE_CANCELLED = "好的，没有删除任何信息。"
ERASE_DONE = ("已删除您在本服务号的个人信息。{kept}"
              "以后您再发消息，我们只记录办理当次事项需要的内容。感谢您的信任！")

ACTION_WORDS = {"deleted": "删除", "pseudonymised": "匿名化", "unbound": "解除绑定", "scrubbed": "去除身份"}
RELATION_WORDS = {"subject": "您的记录", "via": "经名册关联", "ref": "您作为工作人员的操作", "mention": "其他记录中提到您"}
KIND_LABEL = {"veteran": "退役军人", "family": "军属/家属", "other": "其他"}
ROLE_LABEL = {"veteran": "退役军人", "family": "家属", "volunteer": "应急队员", "staff": "工作人员"}
TRIBUTE_LABEL = {"flower": "献花", "salute": "敬礼", "candle": "点烛", "silence": "默哀", "message": "寄语"}
MESSAGE_STATUS = {"approved": "已公开", "pending": "审核中", "rejected": "未通过"}
SUB_STATUS = {"active": "推送中", "paused": "已暂停", "cancelled": "已退订"}

#: Order of 我的数据 lines (tables not listed come after, by name).
ORDER = ("users", "privacy_consents", "callup_members", "callup_targets", "callup_answers", "jobs_subscriptions",
         "jobs_sent", "jobs_digests", "memorial_participants", "memorial_tributes", "memorial_messages",
         "memorial_reminders", "tickets", "outbox", "conversations", "link_tokens")

#: Column names as the 我的数据 page shows them (others show as they are).
COLUMN_LABEL = {
    "name": "姓名", "phone": "手机号", "township": "乡镇", "kind": "身份", "roles": "身份标记",
    "subscribed": "关注中", "subscribed_at": "关注时间", "unsubscribed_at": "取消关注时间", "first_seen": "首次使用",
    "last_seen": "最近使用", "last_message_at": "最近发消息", "last_event_at": "最近点菜单", "qr_scene": "扫码来源",
    "text": "内容", "status": "状态", "created_at": "时间", "at": "时间", "closed_at": "关闭时间",
    "staff_reply": "工作人员回复", "purpose": "类型", "sent_at": "发送时间", "channel": "渠道", "scope": "用途",
    "version": "提示版本", "decision": "选择", "skills": "技能", "team_id": "队伍编号", "bound_at": "绑定时间",
    "away_until": "请假至", "places": "地区", "keywords": "关键词", "categories": "类别", "min_salary": "最低月薪",
    "mode": "推送方式", "action": "祭扫", "day": "日期", "martyr_id": "英烈编号", "answer": "回复",
    "eta_min": "晚到分钟", "updated_at": "更新时间", "flow": "办理事项", "step": "步骤", "payload": "内容",
    "job_type": "全职/兼职", "via": "方式", "first_day": "首次参与", "expires_at": "有效期至", "recorded_as": "登记为",
    "decided_at": "审核时间", "reason": "未通过原因", "preset": "常用语", "answered_at": "回复时间", "wave": "通知批次",
}


#: Values as the page says them, by column (a table-specific map first: ``table.column``).
VALUE_WORDS: dict[str, dict[str, str]] = {
    "users.kind": KIND_LABEL,
    "status": {"open": "待回复", "closed": "已回复", "pending": "待发送/审核中", "sent": "已发送", "failed": "发送失败",
               "cancelled": "已取消", "approved": "已公开", "rejected": "未通过", "active": "推送中", "paused": "已暂停",
               "confirmed": "到", "late": "晚到", "declined": "不能到", "standby": "备用"},
    "memorial_messages.status": MESSAGE_STATUS,
    "jobs_subscriptions.status": SUB_STATUS,
    "decision": {"accepted": "同意", "declined": "不同意"},
    "scope": {"profile": "登记我的信息", "team": "绑定应急队伍"},
    "answer": {"yes": "到", "late": "晚到", "no": "不能到"},
    "recorded_as": {"confirmed": "到", "late": "晚到", "declined": "不能到", "standby": "备用"},
    "action": TRIBUTE_LABEL,
    "mode": {"instant": "有新岗位立即提醒", "daily": "每天汇总"},
    "purpose": {"late_reply": "回复", "callup": "集结通知", "callup_progress": "集结进度", "job_alert": "岗位提醒",
                "memorial_reminder": "纪念日提醒", "broadcast": "通知", "ticket_reply": "留言回复", "notice": "通知"},
    "channel": {"kefu": "微信消息", "template": "模板消息", "sms": "短信", "subscribe": "订阅通知"},
    "via": {"chat": "微信聊天", "page": "网页", "web": "网页"},
    "roles": {},
}


def display_rows(table: str, rows: list[dict[str, Any]], tz: str) -> list[list[tuple[str, str]]]:
    """The rows of one table as (Chinese label, value) pairs for the page: only columns with a Chinese
    label (internal ones — ids, hashes, retry counters — are in the download only), times in local time."""
    out = []
    for r in rows:
        pairs = []
        for col, v in r.items():
            label = COLUMN_LABEL.get(col)
            if label is None or v is None or v == "" or v == [] or v == {}:
                continue
            pairs.append((label, _value(table, col, v, tz)))
        out.append(pairs)
    return out


def _value(table: str, col: str, v: Any, tz: str) -> str:
    if isinstance(v, datetime):
        return fmt_local(v, tz)
    if hasattr(v, "month") and hasattr(v, "day"):
        return _date(v)
    if isinstance(v, bool):
        return "是" if v else "否"
    if col == "payload" and isinstance(v, dict):
        return str(v.get("text") or "（正文已按保存期限清除）")
    if col == "roles":
        return "、".join(ROLE_LABEL.get(x, x) for x in str(v).split(",") if x)
    if isinstance(v, list):
        return "、".join(map(str, v))
    if isinstance(v, dict):
        return "；".join(f"{k}：{x}" for k, x in v.items())
    words = VALUE_WORDS.get(f"{table}.{col}") or VALUE_WORDS.get(col) or {}
    return words.get(str(v), str(v))


def notice_url(config: Any) -> str:
    return config.server.public_url.rstrip("/") + NOTICE_PATH


def mask_phone(phone: Any) -> str:
    p = str(phone or "")
    return f"{p[:3]}****{p[-4:]}" if len(p) >= 7 else ("****" if p else "")


def _date(v: Any) -> str:
    return f"{v.month}月{v.day}日" if hasattr(v, "month") else str(v or "")


def _day(v: Any, tz: str) -> str:
    return fmt_local(v, tz, "{month}月{day}日") if isinstance(v, datetime) else str(v or "")


def _users(rows: list[dict[str, Any]], tz: str) -> str:
    u = rows[0]
    parts = [f"姓名 {u.get('name') or '未填'}", f"手机 {mask_phone(u.get('phone')) or '未填'}",
             f"乡镇 {u.get('township') or '未填'}", f"身份 {KIND_LABEL.get(u.get('kind') or '', '未填')}"]
    roles = [ROLE_LABEL[r] for r in str(u.get("roles") or "").split(",") if r in ROLE_LABEL]
    if roles:
        parts.append("标记 " + "、".join(roles))
    if u.get("first_seen"):
        parts.append(f"首次使用 {_day(u['first_seen'], tz)}")
    return "，".join(parts)


def _consents(rows: list[dict[str, Any]], tz: str) -> str:
    last = max(rows, key=lambda r: r.get("id") or 0)
    what = "同意" if last.get("decision") == "accepted" else "不同意"
    scope = {"profile": "登记我的信息", "team": "绑定应急队伍"}.get(str(last.get("scope")), str(last.get("scope")))
    return f"{len(rows)} 条（最近：{_day(last.get('at'), tz)} {what}“{scope}”，提示版本 {last.get('version')}）"


def _count_by(rows: list[dict[str, Any]], key: str, words: dict[str, str]) -> str:
    c = Counter(str(r.get(key)) for r in rows)
    return "、".join(f"{words.get(k, k)} {n}" for k, n in c.most_common())


SUMMARY: dict[str, Callable[[list[dict[str, Any]], str], str]] = {
    "users": _users,
    "privacy_consents": _consents,
    "tickets": lambda rows, tz: f"{len(rows)} 条（待回复 {sum(1 for r in rows if r.get('status') == 'open')}）",
    "outbox": lambda rows, tz: f"{len(rows)} 条（待发送 {sum(1 for r in rows if r.get('status') == 'pending')}）",
    "conversations": lambda rows, tz: "正在办理的事项和步骤（不含聊天全文）",
    "link_tokens": lambda rows, tz: f"{len(rows)} 个（只保存散列值）",
    "memorial_tributes": lambda rows, tz: f"{len(rows)} 次（{_count_by(rows, 'action', TRIBUTE_LABEL)}）",
    "memorial_participants": lambda rows, tz: f"首次参与 {_date(rows[0].get('first_day'))}",
    "memorial_messages": lambda rows, tz: f"{len(rows)} 条（{_count_by(rows, 'status', MESSAGE_STATUS)}）",
    "memorial_reminders": lambda rows, tz: "已开启",
    "jobs_subscriptions": lambda rows, tz: SUB_STATUS.get(str(rows[0].get("status")), str(rows[0].get("status"))),
    "jobs_sent": lambda rows, tz: f"{len(rows)} 个岗位",
    "jobs_digests": lambda rows, tz: f"{len(rows)} 次",
    "callup_members": lambda rows, tz: f"技能 {'、'.join(rows[0].get('skills') or []) or '无'}（名册由工作人员录入）",
    "callup_targets": lambda rows, tz: f"{len(rows)} 次",
    "callup_answers": lambda rows, tz: f"{len(rows)} 次",
}


def summary_lines(found: list[Any], tz: str) -> list[str]:
    """The 我的数据 lines: one per kind of the person's own data, then one for every mention elsewhere."""
    own = [summary_line(f, tz) for f in ordered(found) if f.relation != "mention"]
    mentions = [f for f in found if f.relation == "mention"]
    if mentions:
        n = sum(int(f.rows[0]["count"]) for f in mentions)
        where = "、".join(dict.fromkeys(MENTION_WHERE.get(f.decl.table, f.decl.label) for f in mentions))
        own.append(f"· 其他记录里提到您：{n} 处（{where}；注销时一并去除）")
    return own


#: Where a mention sits, said from the person's side.
MENTION_WHERE = {"outbox": "发给别人的通知", "inbound_dedup": "消息去重记录", "qa_gaps": "没能回答的问题统计",
                 "callup_events": "集结过程记录"}


def summary_line(found: Any, tz: str) -> str:
    """One 我的数据 line for one :class:`storage.privacy.Found`."""
    d, rel, rows = found.decl, found.relation, found.rows
    if rel == "mention":
        return f"· {d.label}：{rows[0]['count']} 处提到您（注销时一并去除）"
    if rel.startswith("ref:"):
        return f"· {d.label}（您作为工作人员）：{len(rows)} 条"
    fn = SUMMARY.get(d.table)
    body = fn(rows, tz) if fn is not None else f"{len(rows)} 条"
    return f"· {d.label}：{body}"


def ordered(found: list[Any]) -> list[Any]:
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(found, key=lambda f: (f.relation == "mention", rank.get(f.decl.table, len(ORDER)), f.decl.table,
                                        f.relation))


def retention_values(config: Any) -> dict[str, int]:
    """Every number a retention sentence may name: privacy.*_days and bot.dedup_ttl_h."""
    return {**config.privacy.retention_days(), "dedup_ttl_h": config.bot.dedup_ttl_h}


def retention_of(decl: Any, days: dict[str, int]) -> str:
    """How long this kind of data is kept, in one sentence (``days``: privacy.* values by key)."""
    rules = [r.describe(days) for r in decl.retention]
    kept = decl.kept
    for k, v in days.items():
        kept = kept.replace("{" + k + "}", str(v))
    return "；".join([*(r for r in rules if r), *([kept] if kept else [])]) or "直到您注销"


ERASE_WORDS = {"delete": "删除", "pseudonymise": "匿名化（计数保留）", "unbind": "解除微信绑定，名册保留",
               "keep": "保留"}


def erasure_of(decl: Any) -> str:
    """What 注销 does to this table, in a few words (the auditors' table)."""
    out = []
    if decl.subject:
        out.append(ERASE_WORDS.get(decl.on_erase, decl.on_erase))
    if decl.via:
        out.append("随名册登记保留")
    if decl.refs:
        out.append("操作人改为匿名编号")
    if decl.mentions:
        out.append("删除提到此人的记录" if decl.mention_action == "delete" else "去除文中提到的姓名、手机号、编号")
    return "；".join(out) or "保留（工作人员录入）"


def staff_unbound(entry: dict[str, Any]) -> str:
    team = entry.get("team") or "应急队伍"
    tail = f"（手机尾号 {entry['phone_tail']}）" if entry.get("phone_tail") else ""
    return (f"【应急队员解除绑定】{team} 名册第 {entry.get('id')} 号{tail}已在公众号注销个人信息。"
            "名册保留，但微信绑定已解除，收不到微信集结通知：集结时请电话通知，或请其重新绑定。")
