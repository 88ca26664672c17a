"""Texts of the call-up feature: short, phone-sized, drills marked 【演练】 in every one."""

from __future__ import annotations

from typing import Any

from flows.api import fmt_local
from storage.callup import CallUp

DRILL = "【演练】"
ANSWER_WORDS = {"yes": "到", "late": "晚到", "no": "不能到"}
STATUS_WORDS = {"pending": "未回复", "confirmed": "到", "late": "晚到", "declined": "不能到", "standby": "备用"}
STATE_WORDS = {"open": "集结中", "filled": "人数已满", "closed": "已结束"}
REPLY_HINT = "请回复数字：1 到 / 2 晚到 / 3 不能到"


def label(c: CallUp) -> str:
    """The call-up's name as every text shows it (drills marked)."""
    return f"{DRILL if c.drill else ''}{c.title}"


def when(c: CallUp, tz: str) -> str:
    return fmt_local(c.assemble_at, tz)


def need_text(c: CallUp) -> str:
    skills = " ".join(f"{s}{k}" for s, k in c.skills_needed.items())
    return f"{c.needed}人" + (f"（其中 {skills}）" if skills else "")


def member_notice(c: CallUp, name: str, link: str, tz: str, reminder: int = 0) -> str:
    """The call-up push to a member (customer-service message / SMS text)."""
    head = f"【应急集结】{label(c)}" if not reminder else f"【集结提醒·第{reminder}次】{label(c)}\n尚未收到您的回复。"
    lines = [
        head,
        f"{name}，您好！",
        f"地点：{c.place}",
        f"集合：{when(c, tz)}",
        f"需要：{need_text(c)}",
        REPLY_HINT,
        f"或点链接回复：{link}",
    ]
    if c.drill:
        lines.append("（本次为演练）")
    return "\n".join(lines)


def sms_notice(c: CallUp, name: str, link: str, tz: str) -> str:
    """The call-up SMS to a roster member without WeChat: short (an SMS is 70 characters a part), with
    the answer by SMS reply or by the link."""
    place = c.place if len(c.place) <= 24 else c.place[:23] + "…"
    return (f"【应急集结】{label(c)}\n{name}，请于{when(c, tz)}到{place}集合。"
            f"请回复短信：1到 2晚到 3不能到，或点链接回复 {link}" + ("（演练）" if c.drill else ""))


#: Replies to an inbound SMS that records nothing (the same words for an unknown phone and for a
#: member without an open call-up: a reply tells nobody who is on the roster).
SMS_NOTHING_OPEN = "您好，目前没有需要您回复的集结，本条短信未作记录。如有疑问请联系队长。"
SMS_UNCLEAR = "没看懂您的回复，未作记录。请回复数字：1 到 / 2 晚到 / 3 不能到"


def member_data(c: CallUp, link: str, tz: str, phone: str, reminder: int = 0) -> dict[str, Any]:
    """Template fields of a member push (see templates.callup in the config)."""
    title = f"【应急集结】{label(c)}" if not reminder else f"【集结提醒·第{reminder}次】{label(c)}"
    return {"title": title, "place": c.place, "time": when(c, tz),
            "content": f"需要{need_text(c)}。请点击回复：到 / 晚到 / 不能到", "url": link,
            "drill": c.drill, "callup_id": c.id, "phone": phone}


def counts_line(r: dict[str, Any]) -> str:
    """已确认 12/20，晚到 2（不计入），不能到 3，未回复 40，备用 1 — or, where late arrivals count,
    已确认 14/20（含晚到 2），…: the figure beside "人数已满" is always the one the quorum counts."""
    if r.get("late_counts"):
        head = f"已确认 {r['counted']}/{r['needed']}" + (f"（含晚到 {r['late']}）" if r["late"] else "")
    else:
        head = f"已确认 {r['confirmed']}/{r['needed']}" + (f"，晚到 {r['late']}（不计入）" if r["late"] else "，晚到 0")
    line = f"{head}，不能到 {r['declined']}，未回复 {r['no_answer']}"
    if r.get("standby"):
        line += f"，备用 {r['standby']}"
    return line


def skills_line(r: dict[str, Any]) -> str:
    parts = [f"{s} {v['confirmed']}/{v['needed']}" for s, v in r["by_skill"].items() if v["needed"]]
    return ("按技能：" + "，".join(parts)) if parts else ""


def sms_line(r: dict[str, Any]) -> str:
    """短信：已发 3 人（1 人发送中，1 人失败），短信回复 2 人 — empty when the call-up sent no SMS."""
    sms = r.get("sms") or {}
    total = sum(sms.get(k, 0) for k in ("sent", "waiting", "failed"))
    if not total and not sms.get("answered"):
        return ""
    extra = "，".join(x for x in (f"{sms['waiting']} 人发送中" if sms.get("waiting") else "",
                                  f"{sms['failed']} 人失败" if sms.get("failed") else "") if x)
    return (f"未绑定微信、已发短信：{sms.get('sent', 0)} 人" + (f"（{extra}）" if extra else "")
            + f"，短信回复 {sms.get('answered', 0)} 人")


def roster_text(c: CallUp, r: dict[str, Any], tz: str) -> str:
    """集结状态 for staff in chat."""
    lines = [
        f"【集结状态】#{c.id} {label(c)}",
        f"状态：{STATE_WORDS.get(c.state, c.state)}",
        f"地点：{c.place}",
        f"集合：{when(c, tz)}",
        counts_line(r),
    ]
    if r["late_counts"]:
        lines.append("（本类型晚到也计入人数）")
    sk = skills_line(r)
    if sk:
        lines.append(sk)
    sms = sms_line(r)
    if sms:
        lines.append(sms)
    if r.get("unreachable"):
        lines.append(f"未绑定微信、需电话通知：{r['unreachable']} 人")
    if r.get("skipped_away"):
        lines.append(f"请假未通知：{r['skipped_away']} 人")
    if r.get("next_step") and c.state == "open":
        lines.append(f"下一步：{r['next_step']}（{r['next_due_local']}）")
    return "\n".join(lines)


def closed_text(told: int) -> str:
    """What staff are told after closing: how many members coming were told it is over."""
    if told:
        return f"已通知回复“到/晚到”的 {told} 人（含备用）：集结结束。"
    return "没有人回复“到”或“晚到”，无需通知队员。"


def progress_text(c: CallUp, r: dict[str, Any], event: str) -> str:
    """A staff progress push: what just happened and where the roster stands."""
    lines = [f"【集结进度】#{c.id} {label(c)}", event, counts_line(r)]
    sk = skills_line(r)
    if sk:
        lines.append(sk)
    sms = sms_line(r)
    if sms:
        lines.append(sms)
    return "\n".join(lines)
