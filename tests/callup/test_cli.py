"""`vetbot teams …` and `vetbot callup …` on SQLite and PostgreSQL: every bad CSV row reported with its
line and column and nothing imported, re-import updates by phone, create/status/close/list/audit/stats
with --json, one-line errors with exit 2; plus the text parsers the flows rely on."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from flows.callup.parse import parse_eta, parse_need, parse_until, parse_when
from storage.callup import Member, Team
from storage.db import Database
from storage.models import User
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "samples" / "teams_sample.csv"


def vetbot(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db_url: str,
           *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)
    with pytest.raises(SystemExit) as e:
        main([*args[:2], "-c", str(ROOT / "config.example.yaml"), *args[2:]])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


async def _count(db_url: str, model: type) -> int:
    db = Database(db_url)
    try:
        async with db.session() as s:
            return int((await s.execute(select(func.count()).select_from(model))).scalar() or 0)
    finally:
        await db.close()


def test_import_reports_every_bad_row_and_imports_nothing(db_url: str, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "team,name,phone,skills,township,openid\n"
        "一队,张三,13800000001,驾驶|医护,城关镇,\n"
        "一队,李,1380000,潜水,城关镇,\n"
        ",王五,13800000001,救援,,\n"
        "二队,赵六,13800000004,驾驶,河东乡,bad openid!\n", encoding="utf-8")
    code, out, err = vetbot(capsys, monkeypatch, db_url, "teams", "import", str(bad))
    assert code == 2 and out == ""
    assert "line 3, column name: “李”不像姓名" in err and "line 3, column phone: “1380000”不是 11 位手机号" in err
    assert "line 3, column skills: 不认识的技能：潜水" in err
    assert "line 4, column team: 队伍不能为空" in err and "line 4, column phone: 和第 2 行的手机号重复" in err
    assert "line 4, column township: 乡镇不能为空" in err and "line 5, column openid" in err
    assert "7 problem(s) in 3 line(s), nothing imported" in err and "Traceback" not in err
    assert asyncio.run(_count(db_url, Member)) == 0
    cols = tmp_path / "cols.csv"
    cols.write_text("team,name,cellphone,skills,township,remark\n一队,张三,13800000001,驾驶,城关镇,x\n", encoding="utf-8")
    code, _, err = vetbot(capsys, monkeypatch, db_url, "teams", "import", str(cols))
    assert code == 2 and "line 1, column phone: 缺少这一列（手机号）" in err
    assert "line 1, column cellphone: 不认识的列名" in err and "line 1, column remark: 不认识的列名" in err
    code, _, err = vetbot(capsys, monkeypatch, db_url, "teams", "import", str(tmp_path / "nope.csv"))
    assert code == 2 and "file not found" in err


def test_import_then_reimport_updates_by_phone(db_url: str, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    code, out, _ = vetbot(capsys, monkeypatch, db_url, "teams", "import", str(SAMPLE))
    assert code == 0 and "12 new" in out and "城关镇应急救援队" in out
    edited = tmp_path / "gbk.csv"  # Excel on a Chinese Windows saves GB18030
    text = SAMPLE.read_text(encoding="utf-8").replace("李示例,13800000002,医护", "李示例,13800000002,医护|驾驶")
    text = text.replace("13800000032,无人机|驾驶,西山镇,", "13800000032,无人机|驾驶,西山镇,oFakeVetbotUser_000000000032")
    edited.write_bytes(text.encode("gb18030"))
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "teams", "import", str(edited))
    assert code == 0 and "0 new, 2 updated, 10 unchanged" in out
    assert asyncio.run(_count(db_url, Member)) == 12 and asyncio.run(_count(db_url, Team)) == 4

    async def check() -> tuple[list[str], str | None]:
        db = Database(db_url)
        try:
            async with db.session() as s:
                m = (await s.execute(select(Member).where(Member.phone == "13800000002"))).scalar_one()
                u = await s.get(User, "oFakeVetbotUser_000000000032")
                return m.skills, u.roles if u else None
        finally:
            await db.close()

    assert asyncio.run(check()) == (["医护", "驾驶"], "volunteer")
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "teams", "list", "--json")
    teams = json.loads(out)
    assert [t["members"] for t in teams] == [4, 3, 3, 2] and teams[3]["bound"] == 1
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "teams", "qr", "城关镇水上救援队", "--json")
    qr = json.loads(out)
    assert qr["scene"] == f"team:{qr['id']}" and qr["code"] == teams[1]["code"]
    code, _, err = vetbot(capsys, monkeypatch, db_url, "teams", "qr", "没有这个队")
    assert code == 2 and "no team" in err


def test_callup_commands_end_to_end(db_url: str, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert vetbot(capsys, monkeypatch, db_url, "teams", "import", str(SAMPLE))[0] == 0
    code, out, err = vetbot(capsys, monkeypatch, db_url, "callup", "create", "--title", "防汛集结", "--place", "城关镇大堤",
                            "--assemble-at", "2030-07-01 20:30", "--needed", "3", "--skill", "驾驶=1",
                            "--teams", "城关镇", "--type", "防汛", "--drill", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert {k: r[k] for k in ("state", "needed", "confirmed", "late", "declined", "no_answer", "standby")} == {
        "state": "open", "needed": 3, "confirmed": 0, "late": 0, "declined": 0, "no_answer": 7, "standby": 0}
    assert r["by_skill"] == {"驾驶": {"needed": 1, "confirmed": 0, "late": 0}} and r["drill"] is True
    assert r["assemble_at"] == "2030-07-01 20:30" and r["late_counts"] is True
    assert r["chain"][-1] == "提醒工作人员人数未满" and "扩大到全部其余队伍" in r["chain"]
    cid = r["id"]
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "create", "--title", "搜救", "--place", "西山",
                          "--assemble-at", "2030-07-01 08:00", "--needed", "1")
    assert code == 0 and out.strip().isdigit()
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "status", str(cid), "--json")
    assert json.loads(out)["id"] == cid
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "status", str(cid), "--members")
    assert "【演练】" in out and "13800000001" in out and "未绑定" in out
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "list", "--json")
    assert len(json.loads(out)) == 2
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "close", str(cid))
    assert code == 0 and "closed" in out
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "close", str(cid))
    assert "already closed" in out
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "audit", str(cid), "--json")
    assert [e["kind"] for e in json.loads(out) if e["type"] == "event"] == ["created", "closed"]
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "callup", "stats", "--json")
    assert json.loads(out)["callups"] == 1  # the drill is kept out
    for args, msg in (
        (["--assemble-at", "明天"], "YYYY-MM-DD HH:MM"),
        (["--skill", "潜水=1"], "unknown skill"),
        (["--teams", "火星队"], "没有找到“火星队”"),
        (["--type", "演唱会"], "--type"),
        (["--needed", "0"], "at least 1"),
    ):
        base = {"--title": "t", "--place": "p", "--assemble-at": "2030-07-01 08:00", "--needed": "2"}
        base.update(dict(zip(args[::2], args[1::2], strict=True)))
        code, _, err = vetbot(capsys, monkeypatch, db_url, "callup", "create", *[x for kv in base.items() for x in kv])
        assert code == 2 and msg in err and "Traceback" not in err, (args, err)
    code, _, err = vetbot(capsys, monkeypatch, db_url, "callup", "status", "999")
    assert code == 2 and "no call-up #999" in err


# --- parsers (no database) -----------------------------------------------------------------------------
NOW = datetime(2026, 7, 1, 12, 0)  # 20:00 local


@pytest.mark.parametrize(("text", "local"), [
    ("立即", "2026-07-01 20:00"), ("30分钟后", "2026-07-01 20:30"), ("两小时后", "2026-07-01 22:00"),
    ("21:30", "2026-07-01 21:30"), ("8点", "2026-07-02 08:00"), ("今晚9点半", "2026-07-01 21:30"),
    ("明天7点", "2026-07-02 07:00"), ("明天下午3点", "2026-07-02 15:00"), ("7月3日 14:00", "2026-07-03 14:00"),
    ("2026-07-04 06:15", "2026-07-04 06:15"), ("７月３日８点", "2026-07-03 08:00"),
])
def test_parse_when(text: str, local: str) -> None:
    from bot.clock import fmt_local

    got = parse_when(text, NOW, "Asia/Shanghai")
    assert got is not None and fmt_local(got, "Asia/Shanghai", "%Y-%m-%d %H:%M") == local


@pytest.mark.parametrize("text", ["下个月吧", "25:00", "明天", "7月32日 8点", ""])
def test_parse_when_refuses_to_guess(text: str) -> None:
    assert parse_when(text, NOW, "Asia/Shanghai") is None


def test_parse_need_until_eta() -> None:
    skills = ["救援", "医护", "驾驶"]
    assert parse_need("20 驾驶2 医护1", skills) == (20, {"驾驶": 2, "医护": 1})
    assert parse_need("十五人，驾驶两人", skills) == (15, {"驾驶": 2})
    for bad in ("驾驶2", "3 潜水1", "2 驾驶3", "0"):
        with pytest.raises(ValueError):
            parse_need(bad, skills)
    tz = "Asia/Shanghai"
    assert parse_until("3天", NOW, tz) == datetime(2026, 7, 3, 16, 0)  # local midnight after 7月3日
    assert parse_until("明天", NOW, tz) == datetime(2026, 7, 2, 16, 0)
    assert parse_until("7月20日", NOW, tz) == datetime(2026, 7, 20, 16, 0)
    assert parse_until("6月1日", NOW, tz) == datetime(2027, 6, 1, 16, 0)  # a past date means next year
    assert parse_until("下辈子", NOW, tz) is None
    assert [parse_eta(t) for t in ("30", "30分钟", "半小时", "一个半小时", "1小时", "很久")] == [30, 30, 30, 90, 60, None]
