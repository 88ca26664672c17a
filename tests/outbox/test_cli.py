"""The CLI: outbox status/retry/run, menu push/show, broadcast (SQLite and PostgreSQL).

Commands run through ``bot.cli.main`` in a worker thread (they start their own event loop) while the
fake WeChat API keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import SystemClock
from bot.fake_wechat import FakeWeChatServer, FaultRule
from storage.db import Database
from tests.conftest import ROOT
from tests.outbox.conftest import TEMPLATE_PATH, add_user, calls, notice, queue, rows, uid

CONFIG = str(ROOT / "config.example.yaml")


@pytest.fixture
def cli_env(db_url: str, fake: FakeWeChatServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)
    monkeypatch.setenv("VETBOT_WECHAT__API_BASE", fake.base_url)
    monkeypatch.setenv("VETBOT_WECHAT__APPID", fake.state.appid)
    return db_url


async def vetbot(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from bot.cli import main

    capsys.readouterr()

    def call() -> int:
        try:
            main(list(argv))
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    code = await asyncio.to_thread(call)
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_outbox_run_once_status_and_retry(cli_env: str, db: Database, fake: FakeWeChatServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    now = SystemClock().now()
    await add_user(db, uid(1), now)
    await add_user(db, uid(2), now)
    fake.state.set_users({uid(2): {"followed": False}})
    await queue(db, now - timedelta(seconds=1), notice(uid(1)), notice(uid(2)),
                notice(uid(3), key="later", due_at=now + timedelta(days=1)))
    code, out, err = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0, err
    assert "claimed 2  sent 1  failed 1" in out

    code, out, _ = await vetbot(capsys, "outbox", "status", "-c", CONFIG)
    assert code == 0
    assert "推送队列 outbox: 3 条" in out and "sent 1" in out and "failed 1" in out
    assert "template 1" in out and "template: 43004 require subscribe" in out
    assert "kefu 0  subscribe 0  template 1  sms 0" in out  # every channel, 订阅通知 included
    code, out, _ = await vetbot(capsys, "outbox", "status", "-c", CONFIG, "--json")
    data = json.loads(out)
    assert data["by_channel"] == {"kefu": 0, "subscribe": 0, "template": 1, "sms": 0}
    assert data["by_status"]["pending"] == 1 and data["by_purpose"]["notice"]["failed"] == 1
    assert data["failure_reasons"] == [{"reason": "template: 43004 require subscribe", "count": 1}]

    failed = next(r for r in await rows(db) if r.status == "failed")
    sent = next(r for r in await rows(db) if r.status == "sent")
    code, out, err = await vetbot(capsys, "outbox", "retry", "-c", CONFIG, str(failed.id), str(sent.id))
    assert code == 2 and "requeued 1" in out and f"not requeued (not failed, or no such id): {sent.id}" in err
    fake.state.set_users({uid(2): {"followed": True}})
    code, out, _ = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0 and "sent 1" in out
    assert len([c for c in calls(fake, TEMPLATE_PATH) if c.get("errcode") == 0]) == 2
    code, _, err = await vetbot(capsys, "outbox", "retry", "-c", CONFIG)
    assert code == 2 and "--all-failed" in err


async def test_menu_push_from_config(cli_env: str, db: Database, fake: FakeWeChatServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from bot.config import load_config

    code, out, err = await vetbot(capsys, "menu", "push", "-c", CONFIG)
    assert code == 0, err
    assert "菜单已推送：3 个主菜单" in out
    assert fake.state.menu == load_config(CONFIG).menu
    # Keys no intent answers are named, so the operator can add them before users click.
    for line in err.splitlines():
        assert "Traceback" not in line


@pytest.mark.parametrize(("menu", "message"), [
    ({"button": [{"type": "click", "name": f"b{i}", "key": f"K{i}"} for i in range(4)]}, "1 to 3 top-level buttons"),
    ({"button": [{"name": "政策服务", "sub_button": [{"type": "click", "name": "问答"}]}]},
     "button 1 (政策服务) > sub-button 1 (问答): type click needs a key"),
    ({"button": [{"type": "view", "name": "官网", "url": "www.example.org"}]}, "needs an http(s) url"),
    ({"button": [{"type": "clik", "name": "问答", "key": "QA"}]}, "type 'clik' is not a menu type"),
    ({"button": [{"type": "click", "name": "一个非常非常长的菜单名字", "key": "QA"}]}, "WeChat allows 16"),
])
async def test_menu_push_refuses_bad_menus_before_calling_wechat(cli_env: str, db: Database, fake: FakeWeChatServer,
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 menu: dict, message: str) -> None:
    f = tmp_path / "menu.json"
    f.write_text(json.dumps(menu, ensure_ascii=False), encoding="utf-8")
    code, _, err = await vetbot(capsys, "menu", "push", "-c", CONFIG, "--file", str(f))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not fake.state.calls


async def test_menu_file_yaml_show_and_wechat_refusal(cli_env: str, db: Database, fake: FakeWeChatServer,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "menu.yaml"
    f.write_text("menu:\n  button:\n    - {type: click, name: 政策问答, key: POLICY_QA}\n"
                 "    - {type: click, name: 神秘按钮, key: NO_SUCH_KEY}\n", encoding="utf-8")
    code, out, err = await vetbot(capsys, "menu", "show", "-c", CONFIG, "--file", str(f))
    assert code == 0 and json.loads(out)["button"][0]["key"] == "POLICY_QA"
    assert "NO_SUCH_KEY" in err and "POLICY_QA" not in err
    assert not fake.state.calls
    fake.state.add_fault(FaultRule(path="/cgi-bin/menu/create", errcode=40017, count=1))
    code, _, err = await vetbot(capsys, "menu", "push", "-c", CONFIG, "--file", str(f))
    assert code == 2 and "WeChat refused the menu" in err and "40017" in err
    code, _, err = await vetbot(capsys, "menu", "push", "-c", CONFIG, "--file", str(tmp_path / "nope.yaml"))
    assert code == 2 and "file not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("button: [\n", encoding="utf-8")
    code, _, err = await vetbot(capsys, "menu", "push", "-c", CONFIG, "--file", str(bad))
    assert code == 2 and "not valid YAML/JSON" in err


async def test_broadcast_filters_followers_and_is_idempotent(cli_env: str, db: Database, fake: FakeWeChatServer,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    now = SystemClock().now()
    await add_user(db, uid(10), now, roles="staff", township="竹阳街道")
    await add_user(db, uid(11), now, roles="staff,veteran", township="庙坝镇")
    await add_user(db, uid(12), now, roles="staff", subscribed=False)
    await add_user(db, uid(13), now, roles="veteran", township="竹阳街道")
    await add_user(db, uid(14), now, roles="staffer")  # not the staff role, only a similar word
    args = ["broadcast", "-c", CONFIG, "--title", "工作通知", "--text", "周五下午3点开会", "--role", "staff"]
    code, out, _ = await vetbot(capsys, *args, "--dry-run")
    assert code == 0 and "2 人" in out and not await rows(db)
    code, out, _ = await vetbot(capsys, *args)
    assert code == 0 and "已排队 2 条" in out
    queued = await rows(db)
    assert sorted(r.openid for r in queued) == [uid(10), uid(11)]
    r = queued[0]
    assert r.purpose == "broadcast" and r.payload["text"] == "【工作通知】周五下午3点开会"
    assert r.payload["data"]["title"] == "工作通知" and r.payload["data"]["content"] == "周五下午3点开会"
    assert r.payload["data"]["time"]
    code, out, _ = await vetbot(capsys, *args, "--json")
    assert json.loads(out)["queued"] == 0 and json.loads(out)["already_queued"] == 2
    code, out, _ = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "通知", "--text", "乡镇通知",
                                "--township", "竹阳街道")
    assert "已排队 2 条" in out  # both followers in 竹阳街道, any role
    code, _, err = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "通知", "--text", "x", "--url", "ftp://x")
    assert code == 2 and "--url" in err


async def test_broadcast_is_delivered_as_broadcast_template(cli_env: str, db: Database, fake: FakeWeChatServer,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    now = SystemClock().now()
    await add_user(db, uid(20), now, roles="staff")
    await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "防汛预警", "--text", "今晚有暴雨", "--role", "staff",
                 "--warning")
    code, out, _ = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0 and "sent 1" in out
    body = calls(fake, TEMPLATE_PATH)[0]["body"]
    assert body["template_id"].startswith("TPL_BROADCAST")
    assert body["data"]["thing1"]["value"] == "防汛预警" and body["data"]["thing2"]["value"] == "今晚有暴雨"
    assert body["data"]["time3"]["value"]  # the local time the notice was queued
    assert "first" not in body["data"] and "remark" not in body["data"]


async def test_broadcast_nobody_asked_for_gets_no_template_message(cli_env: str, db: Database,
                                                                   fake: FakeWeChatServer,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # WeChat (since 2023-05-04): template messages a person did not trigger are for fault and disaster
    # warnings only. A plain notice reaches people in the chat window, with 订阅通知 consent, or by SMS.
    now = SystemClock().now()
    await add_user(db, uid(21), now, roles="staff")
    await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "工作通知", "--text", "周五开会", "--role", "staff")
    code, out, _ = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0 and "failed 1" in out and not calls(fake, TEMPLATE_PATH)
    code, out, _ = await vetbot(capsys, "outbox", "status", "-c", CONFIG)
    assert "a template message is not allowed for broadcast" in out


async def test_scheduled_broadcast_waits_in_the_outbox_until_its_time(cli_env: str, db: Database,
                                                                     fake: FakeWeChatServer,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime

    from bot.clock import from_local, to_local

    now = SystemClock().now()
    await add_user(db, uid(30), now, roles="veteran")
    later = (to_local(now, "Asia/Shanghai") + timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    at = later.strftime("%Y-%m-%d %H:%M")
    code, out, err = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "清明祭扫", "--text", "欢迎参加",
                                  "--at", at)
    assert code == 0 and "已排队 1 条" in out and at in out, err
    (r,) = await rows(db)
    assert r.due_at == from_local(datetime.strptime(at, "%Y-%m-%d %H:%M"))
    assert f":broadcast:{at[:10]}T0800:" in r.idempotency_key  # once per notice and send time
    assert r.payload["data"]["time"].startswith(f"{later.month}月{later.day}日 08:00")  # no leading zeros
    code, out, _ = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0 and not calls(fake, TEMPLATE_PATH) and (await rows(db))[0].status == r.status
    # The same notice again at that time is not queued twice; at a corrected time, or now, it is.
    args = ["broadcast", "-c", CONFIG, "--title", "清明祭扫", "--text", "欢迎参加"]
    code, out, _ = await vetbot(capsys, *args, "--at", at)
    assert code == 0 and "已排队 0 条" in out and "同一发送时间" in out
    code, out, _ = await vetbot(capsys, *args, "--at", at.replace("08:00", "09:00"))
    assert code == 0 and "已排队 1 条" in out
    code, out, _ = await vetbot(capsys, *args)
    assert code == 0 and "已排队 1 条" in out
    for bad, says in (("2020-01-01 08:00", "in the past"), ("明天早上", "like"), ("2026-13-01 08:00", "like")):
        code, _, err = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "t", "--text", "x", "--at", bad)
        assert code == 2 and says in err
    assert len(await rows(db)) == 3


async def test_a_scheduled_broadcast_is_listed_and_can_be_taken_back(cli_env: str, db: Database,
                                                                      fake: FakeWeChatServer,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from bot.clock import to_local

    now = SystemClock().now()
    for i in (40, 41):
        await add_user(db, uid(i), now, roles="veteran")
    later = (to_local(now, "Asia/Shanghai") + timedelta(days=3)).replace(hour=9, minute=30, second=0, microsecond=0)
    at = later.strftime("%Y-%m-%d %H:%M")
    code, out, err = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "座谈会", "--text", "改期另行通知",
                                  "--at", at, "--json")
    assert code == 0, err
    key = json.loads(out)["key"]
    code, out, _ = await vetbot(capsys, "outbox", "scheduled", "-c", CONFIG, "--json")
    assert code == 0 and json.loads(out) == [{"key": key, "due_at": at, "title": "座谈会", "pending": 2}]
    code, out, _ = await vetbot(capsys, "outbox", "scheduled", "-c", CONFIG)
    assert key in out and "座谈会" in out and at in out

    from sqlalchemy import update

    from storage.models import OutboxMessage

    async with db.session() as s:  # one push already failed: cancelling must keep `retry --all-failed` off it
        await s.execute(update(OutboxMessage).where(OutboxMessage.openid == uid(41)).values(status="failed"))
    code, out, err = await vetbot(capsys, "outbox", "cancel", "-c", CONFIG, key)
    assert code == 0 and "已取消 2 条" in out, err
    assert {(r.status, r.last_error) for r in await rows(db)} == {("cancelled", "cancelled by staff")}
    code, out, _ = await vetbot(capsys, "outbox", "scheduled", "-c", CONFIG)
    assert "没有等待发送的群发通知" in out
    code, out, _ = await vetbot(capsys, "outbox", "retry", "-c", CONFIG, "--all-failed")
    assert "requeued 0" in out
    code, _, _ = await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    assert code == 0 and not calls(fake, TEMPLATE_PATH)
    # Queued again after the cancel (same text, same time), the notice goes out anew.
    code, out, err = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "座谈会", "--text", "改期另行通知",
                                  "--at", at)
    assert code == 0 and "已排队 2 条" in out, err
    assert sorted(r.status for r in await rows(db)) == ["pending", "pending"]
    await vetbot(capsys, "outbox", "cancel", "-c", CONFIG, key)

    # A notice already sent cannot be taken back, and the command says so; unknown keys are refused.
    code, out, _ = await vetbot(capsys, "broadcast", "-c", CONFIG, "--title", "通知", "--text", "今天", "--json",
                                "--warning")
    sent_key = json.loads(out)["key"]
    await vetbot(capsys, "outbox", "run", "-c", CONFIG, "--once")
    code, out, _ = await vetbot(capsys, "outbox", "cancel", "-c", CONFIG, sent_key, "--json")
    assert code == 0 and json.loads(out)["cancelled"] == 0 and json.loads(out)["sent"] == 2
    code, _, err = await vetbot(capsys, "outbox", "cancel", "-c", CONFIG, "broadcast:2020-01-01:0000")
    assert code == 2 and "no broadcast" in err
    code, _, err = await vetbot(capsys, "outbox", "cancel", "-c", CONFIG, "callup:1")
    assert code == 2 and "not a broadcast key" in err
