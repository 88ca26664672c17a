"""Words and formatting shared by the chat flow and the memorial pages.

Record fields come from an imported CSV: everything of a record put into a chat text passes through
:func:`bot.text.plain_text`, so a stored ``<a href>`` can never become a live link in WeChat."""

from __future__ import annotations

from typing import Any

from flows.api import clip, plain_text

#: Chat and page labels of the actions (storage keys in :data:`storage.memorial.ACTIONS`).
LABEL = {"flower": "献花", "salute": "敬礼", "candle": "点烛", "silence": "默哀", "message": "寄语"}
#: What users type for each action (normalised text).
WORDS = {
    "flower": ("献花", "献一束花", "献束花", "送花", "献上鲜花", "鲜花"),
    "salute": ("敬礼", "敬个礼", "致敬"),
    "candle": ("点烛", "点蜡烛", "点亮蜡烛", "点支蜡烛", "蜡烛", "点灯"),
    "silence": ("默哀", "默哀一分钟", "静默"),
    "message": ("寄语", "写寄语", "留寄语", "写留言", "留言", "悼念留言", "留言寄语", "献上寄语"),
}
#: Names that mean "all martyrs", not one of them.
ALL_NAMES = frozenset({"", "全体", "全体英烈", "英烈", "烈士", "英雄", "先烈", "英烈们", "烈士们", "先烈们",
                       "英雄们", "所有英烈", "革命先烈", "人民英雄"})
_AFTER = {
    "flower": "一束鲜花，寄托哀思。",
    "salute": "向英雄致敬！",
    "candle": "烛光长明，英灵永存。",
    "silence": "",
    "message": "",
}


def action_of(norm_text: str) -> str | None:
    """The action a (normalised) text names, or None."""
    for action, words in WORDS.items():
        if norm_text in words:
            return action
    return None


def target_name(name: str | None) -> str:
    """How a target is named in a sentence: 黄继光烈士, 无名烈士, 全体英烈."""
    if not name:
        return "全体英烈"
    name = plain_text(name)
    return name if name.endswith(("烈士", "英烈")) else f"{name}烈士"


def phrase(action: str, name: str | None) -> str:
    """为黄继光烈士献花 / 向全体英烈敬礼 / 为无名烈士点烛 …"""
    who = target_name(name)
    return {
        "flower": f"为{who}献花",
        "salute": f"向{who}敬礼",
        "candle": f"为{who}点烛",
        "silence": f"为{who}默哀",
        "message": f"给{who}写寄语",
    }[action]


def counted_text(action: str, name: str | None, n: int) -> str:
    """您是第 12,345 位为黄继光烈士献花的人。一束鲜花，寄托哀思。"""
    return f"您是第 {n:,} 位{phrase(action, name)}的人。{_AFTER.get(action, '')}".rstrip()


def repeat_text(action: str, name: str | None) -> str:
    """A repeat on the same day: thanked, not counted."""
    did = {"flower": "献过花", "salute": "敬过礼", "candle": "点过蜡烛", "silence": "默哀过", "message": "写过寄语"}
    who = target_name(name)
    return f"您今天已经为{who}{did[action]}了，每人每天计一次。您的心意我们收到了，谢谢您！"


def fmt_partial(d: str) -> str:
    """1951-03-02 → 1951年3月2日; 1951-03 → 1951年3月; 1951 → 1951年."""
    if not d:
        return ""
    parts = d.split("-")
    out = f"{int(parts[0])}年"
    if len(parts) > 1:
        out += f"{int(parts[1])}月"
    if len(parts) > 2:
        out += f"{int(parts[2])}日"
    return out


def life_span(born: str, died: str) -> str:
    b, d = fmt_partial(born), fmt_partial(died)
    if b and d:
        return f"{b} — {d}"
    if d:
        return f"？ — {d}"
    return f"{b} — ？" if b else ""


def counts_line(c: dict[str, int], messages: int | None = None) -> str:
    """献花 1,234 ｜ 敬礼 56 ｜ 点烛 7 ｜ 默哀 8 ｜ 寄语 9"""
    parts = [f"{LABEL[a]} {c.get(a, 0):,}" for a in ("flower", "salute", "candle", "silence")]
    parts.append(f"寄语 {(messages if messages is not None else c.get('message', 0)):,}")
    return " ｜ ".join(parts)


#: Chat cards and lists stay under WeChat's 2,048-byte passive reply: long fields are clipped there
#: (the page shows them whole).
FIELD_CHARS = 40


def summary(m: Any) -> str:
    """One line for a result list: 黄继光（四川中江，1952年牺牲）."""
    bits = [b for b in (clip(plain_text(m.hometown), 20), f"{fmt_partial(m.died)}牺牲" if m.died else "") if b]
    name = plain_text(m.name)
    return f"{name}（{'，'.join(bits)}）" if bits else name


def card(m: Any, c: dict[str, int], messages: int, bio_chars: int) -> str:
    """The record card shown in chat."""
    lines = [f"【{target_name(m.name)}】"]
    facts = [f"性别：{plain_text(m.gender)}" if m.gender else "",
             f"籍贯：{clip(plain_text(m.hometown), FIELD_CHARS)}" if m.hometown else ""]
    if any(facts):
        lines.append(" ｜ ".join(f for f in facts if f))
    span = life_span(m.born, m.died)
    if span:
        lines.append(f"生卒：{span}")
    for label, value in (("部队", m.unit), ("牺牲地点", m.place_of_death), ("安葬地", m.burial)):
        if value:
            lines.append(f"{label}：{clip(plain_text(value), FIELD_CHARS)}")
    if m.biography:
        lines.append(f"事迹：{clip(plain_text(m.biography), bio_chars)}")
    lines.append(counts_line(c, messages))
    return "\n".join(lines)
