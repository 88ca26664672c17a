"""How postings and subscriptions read on a phone (chat replies and push texts).

Posting fields come from an imported CSV and subscription words from users: every one put into a chat
text passes through :func:`bot.text.plain_text` (:func:`_p`), so a stored ``<a href>`` can never become a
live link in WeChat."""

from __future__ import annotations

from datetime import date

from flows.api import clip
from flows.api import plain_text as _p
from flows.jobs.timeutil import fmt_hm
from storage.jobs import DAILY, PAUSED, JobPosting, JobSubscription


def salary_text(lo: int | None, hi: int | None) -> str:
    """面议 / 3000元起 / 最高5000元 / 3000-5000元 (per month)."""
    if lo is None and hi is None:
        return "面议"
    if lo is not None and hi is not None:
        return f"{lo}元" if lo == hi else f"{lo}-{hi}元"
    return f"{lo}元起" if lo is not None else f"最高{hi}元"


def deadline_text(d: date | None) -> str:
    return "长期有效" if d is None else f"{d.year}年{d.month}月{d.day}日"


def short_line(p: JobPosting) -> str:
    """One line for a numbered list: 保安队长｜城关镇｜4000-5000元★."""
    star = "★" if p.veteran_priority else ""
    return f"{clip(_p(p.title), 14)}｜{clip(_p(p.location), 10)}｜{salary_text(p.salary_min, p.salary_max)}{star}"


def card(p: JobPosting) -> str:
    """The detail card of one posting."""
    lines = [
        f"【{_p(p.title)}】",
        f"单位：{_p(p.company)}",
        f"地点：{_p(p.location)}",
        f"月薪：{salary_text(p.salary_min, p.salary_max)}",
        f"类型：{p.job_type}",
    ]
    if p.requirements:
        lines.append(f"要求：{clip(_p(p.requirements), 160)}")
    lines.append(f"联系：{_p(p.contact)}")
    lines.append(f"截止：{deadline_text(p.deadline)}")
    if p.veteran_priority:
        lines.append("★ 退役军人优先")
    if p.source:
        lines.append(f"来源：{_p(p.source)}")
    return "\n".join(lines)


def alert_text(p: JobPosting) -> str:
    """Customer-service / SMS text of an instant alert (the sender appends the link)."""
    vp = "，退役军人优先" if p.veteran_priority else ""
    return (f"【新岗位】{_p(p.title)}\n{_p(p.company)}\n{_p(p.location)}｜{salary_text(p.salary_min, p.salary_max)}｜"
            f"{p.job_type}{vp}\n"
            f"截止：{deadline_text(p.deadline)}。回复“我的订阅”可修改或退订。")


def sub_summary(s: JobSubscription) -> str:
    """The 我的订阅 card."""
    state = {"active": "推送中", "paused": "已暂停", "cancelled": "已退订"}.get(s.status, s.status)
    what = _p("、".join([*s.categories, *s.keywords])) or "不限"
    where = _p("、".join(s.places)) or "不限"
    pay = f"{s.min_salary}元以上" if s.min_salary else "不限"
    how = f"每天 {fmt_hm(s.digest_minute)} 汇总推送" if s.mode == DAILY else "有新岗位立即提醒"
    quiet = "无" if s.quiet_start == s.quiet_end else f"{fmt_hm(s.quiet_start)}-{fmt_hm(s.quiet_end)}"
    lines = [
        "【我的岗位订阅】",
        f"状态：{state}",
        f"地区：{where}",
        f"岗位：{what}",
        f"月薪：{pay}",
        f"类型：{s.job_type or '不限'}",
        f"推送：{how}",
        f"免打扰：{quiet}",
    ]
    if s.status == PAUSED:
        lines.append("（暂停期间不推送，恢复后只推新岗位）")
    return "\n".join(lines)
