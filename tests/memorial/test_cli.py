"""`vetbot martyrs` and `vetbot memorial` commands against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from storage.db import Database
from storage.memorial import PENDING, Martyr, MemorialMessage, add_message, record_tribute
from storage.models import OutboxMessage
from tests.conftest import ROOT
from tests.memorial.conftest import SAMPLE

CONFIG = str(ROOT / "config.example.yaml")


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `vetbot …` in-process on ``db_url``; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out = capsys.readouterr()
        return int(e.value.code or 0), out.out, out.err

    return run


def _db_run(db_url: str, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        db = Database(db_url)
        try:
            async with db.session() as s:
                return await fn(s)
        finally:
            await db.close()

    return asyncio.run(go())


def test_import_reports_every_bad_row_and_imports_nothing(cli, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,gender,hometown,born,died,unit,place_of_death,burial,biography\n"
                   "张三,男,某县,1930,1951,部队,地点,陵园,示例\n"
                   ",男,某县,1930,1951,部队,地点,陵园,示例\n"
                   "李四,男,某县,1930-13,1951,部队,地点,陵园,示例\n", encoding="utf-8")
    code, _, err = cli("martyrs", "import", "-c", CONFIG, str(bad))
    assert code == 2 and "line 3, column name" in err and "line 4, column born" in err and "nothing imported" in err
    assert "Traceback" not in err
    assert _db_run(db_url, lambda s: s.scalar(select(func.count()).select_from(Martyr))) == 0
    code, _, err = cli("martyrs", "import", "-c", CONFIG, str(tmp_path / "missing.csv"))
    assert code == 2 and "file not found" in err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("姓名,性别,老家\n张三,男,某县\n", encoding="utf-8")
    code, _, err = cli("martyrs", "import", "-c", CONFIG, str(wrong))
    assert code == 2 and "line 1, column hometown: 缺少这一列（籍贯）" in err
    assert "line 1, column 老家: 不认识的列名" in err and "line 1, column biography: 缺少这一列" in err


def test_import_then_reimport_updates(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("martyrs", "import", "-c", CONFIG, str(SAMPLE), "--check")
    assert code == 0 and "12 rows valid (UTF-8); dry run, nothing imported: 12 new" in out
    assert "line 2: 新增 张建国（示例省东山县城关镇，1951-11 牺牲）" in out
    code, out, _ = cli("martyrs", "import", "-c", CONFIG, str(SAMPLE))
    assert code == 0 and "12 new, 0 updated" in out
    code, out, _ = cli("martyrs", "import", "-c", CONFIG, str(SAMPLE))
    assert code == 0 and "0 new, 0 updated, 12 unchanged" in out
    code, out, _ = cli("martyrs", "list", "-c", CONFIG, "-q", "zjg", "--json")
    data = json.loads(out)
    assert data["total"] == 1 and data["records"][0]["name"] == "张建国"


def test_review_approves_rejects_and_tells_the_author(cli, db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now, day = datetime(2026, 4, 4, 2), date(2026, 4, 4)

    async def seed(s):  # type: ignore[no-untyped-def]
        ids = []
        for openid, text in (("a1", "永远怀念您"), ("a2", "加微信领红包"), ("a3", "家乡一切都好"), ("a4", "您安息吧")):
            ids.append((await add_message(s, openid=openid, martyr_id=0, text=text, preset=False, status=PENDING,
                                          now=now, day=day)).id)
        return ids

    ids = _db_run(db_url, seed)
    code, out, _ = cli("memorial", "review", "-c", CONFIG, "--list", "--json")
    assert code == 0 and [r["text"] for r in json.loads(out)][:2] == ["永远怀念您", "加微信领红包"]
    code, out, _ = cli("memorial", "review", "-c", CONFIG, "--approve", str(ids[0]), "--reject", str(ids[1]))
    assert code == 0 and f"#{ids[0]} approved" in out and f"#{ids[1]} rejected" in out
    code, _, err = cli("memorial", "review", "-c", CONFIG, "--approve", str(ids[1]), "--approve", "99999")
    assert code == 2 and "already rejected" in err and "no message #99999" in err
    # Interactive: a (approve) the next one, s (skip), then the input ends.
    monkeypatch.setattr("sys.stdin", io.StringIO("a\ns\n"))
    code, out, _ = cli("memorial", "review", "-c", CONFIG)
    assert code == 0 and "家乡一切都好" in out and "本次通过 1 条" in out
    pushes = _db_run(db_url, lambda s: s.execute(select(OutboxMessage.openid, OutboxMessage.payload)
                                                 .where(OutboxMessage.purpose == "notice")
                                                 .order_by(OutboxMessage.openid)))
    texts = {o: p["text"] for o, p in pushes.all()}
    assert set(texts) == {"a1", "a2", "a3"}
    assert "已审核通过" in texts["a1"] and "没能公开展示" in texts["a2"] and "感谢您的理解" in texts["a2"]
    assert "加微信" not in texts["a2"]


def test_reject_reason_reaches_the_author_kindly(cli, db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 14 item 12: staff's reason was stored and never told to the author."""
    now, day = datetime(2026, 4, 4, 2), date(2026, 4, 4)

    async def seed(s):  # type: ignore[no-untyped-def]
        return [(await add_message(s, openid=o, martyr_id=1 if o == "b1" else 0, text=t, preset=False,
                                   status=PENDING, now=now, day=day)).id
                for o, t in (("b1", "加我微信 abc123 一起纪念"), ("b2", "英雄千古"), ("b3", "想念您"))]

    async def seed_martyr(s):  # type: ignore[no-untyped-def]
        s.add(Martyr(natural_key="k:x", name="张建国", gender="男", hometown="", born="", died="", unit="",
                     place_of_death="", burial="", biography="", photo_url=None, initials=" zjg ", pinyin="zhangjianguo",
                     created_at=now, updated_at=now))

    _db_run(db_url, seed_martyr)
    ids = _db_run(db_url, seed)
    code, out, _ = cli("memorial", "review", "-c", CONFIG, "--reject", str(ids[0]), "--reason", "含有联系方式")
    assert code == 0 and f"#{ids[0]} rejected" in out
    # Interactive: r, then the reason typed at the prompt (with markup, which the chat must not render).
    monkeypatch.setattr("sys.stdin", io.StringIO('r\n<a href="http://x">内容重复</a>\nr\n\n'))
    code, out, _ = cli("memorial", "review", "-c", CONFIG)
    assert code == 0 and "本次通过 0 条，不通过 2 条" in out

    async def notices(s):  # type: ignore[no-untyped-def]
        rows = await s.execute(select(OutboxMessage.openid, OutboxMessage.payload).where(OutboxMessage.purpose == "notice"))
        return {o: p for o, p in rows.all()}

    got = _db_run(db_url, notices)
    assert got["b1"]["text"] == ("您给张建国烈士写的寄语这次没能公开展示，原因：含有联系方式。感谢您的理解。"
                                 "如愿意，可以换一种说法再写一条，或选用预设寄语。")
    assert got["b1"]["data"]["content"] == "未能展示：含有联系方式" and got["b1"]["url"].endswith("/m/1")
    assert "原因：内容重复。" in got["b2"]["text"] and "<a" not in got["b2"]["text"]
    assert "原因" not in got["b3"]["text"] and "没能公开展示" in got["b3"]["text"]
    reasons = _db_run(db_url, lambda s: s.execute(select(MemorialMessage.id, MemorialMessage.reason)))
    assert dict(reasons.all())[ids[0]] == "含有联系方式"


def test_stats_campaigns_and_words(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async def seed(s):  # type: ignore[no-untyped-def]
        for openid, mid, action, d in [("a", 0, "flower", 4), ("b", 0, "flower", 4), ("a", 1, "salute", 5),
                                       ("c", 2, "candle", 6), ("a", 0, "flower", 5)]:
            await record_tribute(s, openid, mid, action, date(2026, 4, d))

    _db_run(db_url, seed)
    code, out, _ = cli("memorial", "stats", "-c", CONFIG, "--campaign", "qingming-2026", "--json")
    data = json.loads(out)
    assert code == 0 and data["campaign"]["day"] == "2026-04-05"
    assert (data["from"], data["to"], data["participants"], data["total"]) == ("2026-03-30", "2026-04-06", 3, 5)
    by_day = {d["day"]: d for d in data["days"]}
    assert by_day["2026-04-04"]["participants"] == 2 and by_day["2026-04-04"]["actions"]["flower"] == 2
    assert by_day["2026-04-05"]["actions"] == {"flower": 1, "salute": 1, "candle": 0, "silence": 0, "message": 0}
    code, out, _ = cli("memorial", "stats", "-c", CONFIG, "--from", "2026-04-04", "--to", "2026-04-05")
    assert code == 0 and "2026-04-04" in out and "合计" in out
    code, _, err = cli("memorial", "stats", "-c", CONFIG, "--from", "04/04/2026")
    assert code == 2 and "not a date" in err
    code, _, err = cli("memorial", "stats", "-c", CONFIG, "--campaign", "nope")
    assert code == 2 and "no campaign 'nope'" in err
    code, out, _ = cli("memorial", "campaign", "add", "-c", CONFIG, "july1-2026", "--title", "七一·缅怀先烈",
                       "--day", "2026-07-01", "--from", "2026-06-28")
    assert code == 0 and "reminders go out on 2026-07-01" in out
    code, _, err = cli("memorial", "campaign", "add", "-c", CONFIG, "july1-2026", "--title", "x", "--day",
                       "2026-07-01")
    assert code == 2 and "already exists" in err
    code, _, err = cli("memorial", "campaign", "add", "-c", CONFIG, "Bad Code", "--title", "x", "--day", "2026-07-01")
    assert code == 2 and "lowercase" in err
    code, out, _ = cli("memorial", "campaign", "list", "-c", CONFIG, "--year", "2026", "--json")
    assert [c["code"] for c in json.loads(out)] == ["qingming-2026", "july1-2026", "martyrs-day-2026"]
    code, out, _ = cli("memorial", "words", "check", "-c", CONFIG, "代開發票", "英雄永垂不朽")
    assert code == 0 and "命中 代开发票" in out and "未命中" in out
