"""The sample ``server.secret_key`` (issue 14, item 2): links forged with it opened the roster (all
phones), answered for a member and posted a 寄语 as another user. `vetbot serve` refuses an empty,
sample or short key against a real WeChat API; links.py has no fallback key any more."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot.config import ConfigError, check_secret_key, load_config, secret_key_problem
from bot.links import LinkError, sign, verify
from flows.callup import service
from tests.callup.test_web import _create, _path, _setup
from tests.conftest import ROOT, make_config
from tests.helpers import app_client

REAL_API = "https://api.weixin.qq.com"
GOOD_KEY = "4f1c0a9e7b2d46e8a3c5f7091b2d4e6f8a0c2e4f6a8b0d2f"
SAMPLE = load_config(ROOT / "config.example.yaml", {}).server.secret_key


@pytest.mark.parametrize("key", [
    SAMPLE, "", "change-me", "CHANGE_ME_PLEASE_0123456789abcdef0123456789", "your-secret-key-here-1234567890abcdef",
    "s3cr3t", "a" * 40, "0123456789abcdef0123456789abcd",  # 30 characters
])
def test_unfit_keys_are_named(key: str) -> None:
    assert secret_key_problem(key) is not None
    assert secret_key_problem(GOOD_KEY) is None


async def test_link_forged_with_the_sample_key_is_refused_by_a_server_for_a_real_api(db_url: str) -> None:
    cfg = await _setup(db_url)
    sample = make_config(db_url)  # what an outsider has: config.example.yaml
    cfg.server.secret_key, cfg.wechat.api_base = GOOD_KEY, REAL_API
    async with app_client(cfg) as (client, runtime):
        c = await _create(runtime)
        genuine = _path(service.roster_link(cfg, c, runtime.clock.now()))
        # A proper deployment, and one left on the sample key (which `vetbot serve` would not start).
        for key in (GOOD_KEY, SAMPLE):
            cfg.server.secret_key = key
            forged = sign(sample, {"c": c.id, "s": "roster"}, ttl_s=3600)
            resp = await client.get(f"/callup/roster/{forged}")
            body = await resp.text()
            assert resp.status == 400 and "链接无效" in body and "1390000" not in body, key
            # Answer links are opaque tokens in the database now: a signed one is refused with any key.
            forged = sign(sample, {"c": c.id, "m": 1}, ttl_s=3600)
            resp = await client.post(f"/r/{forged}", data={"a": "no"}, allow_redirects=False)
            assert resp.status == 410 and "1390000" not in await resp.text(), key
        cfg.server.secret_key = GOOD_KEY
        # The deployment's own link still opens, for staff (the roster shows phones).
        from bot.web.viewer import VIEWER_KIND, VIEWER_TTL
        from storage import linktokens
        from storage.models import User

        async with runtime.db.session() as s:
            now = runtime.clock.now()
            s.add(User(openid="staff_for_roster_0001", roles="staff", first_seen=now, last_seen=now))
            staff = await linktokens.issue(s, VIEWER_KIND, "staff_for_roster_0001", {"m": None, "via": "oauth"},
                                           VIEWER_TTL, now=now)
        resp = await client.get(genuine, cookies={"vb_who": staff})
        assert resp.status == 200 and "13900000000" in await resp.text()


def test_no_fallback_key_from_appid_token_and_secret() -> None:
    import base64
    import hashlib
    import hmac
    import json

    cfg = load_config(ROOT / "config.example.yaml", {"VETBOT_SERVER__SECRET_KEY": ""})
    with pytest.raises(ConfigError, match=r"server\.secret_key is empty"):
        sign(cfg, {"o": "u1", "p": "m"})
    # What the old fallback signed with: values that sit in the WeChat console and in screenshots.
    derived = f"{cfg.wechat.appid}:{cfg.wechat.token}:{cfg.wechat.secret}".encode()
    raw = json.dumps({"o": "staff_demo", "p": "m"}, separators=(",", ":"), sort_keys=True).encode()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    forged = f"{b64(raw)}.{b64(hmac.new(derived, raw, hashlib.sha256).digest()[:16])}"
    with pytest.raises(LinkError):
        verify(cfg, forged)


def test_sample_key_is_only_a_warning_against_the_local_fake_api() -> None:
    local = load_config(ROOT / "config.example.yaml", {})
    assert "accepted only because wechat.api_base is the local fake WeChat API" in (check_secret_key(local) or "")
    real = load_config(ROOT / "config.example.yaml", {"VETBOT_WECHAT__API_BASE": REAL_API})
    with pytest.raises(ConfigError, match=r"config.example.yaml:\d+: server.secret_key is a sample value"):
        check_secret_key(real)
    ok = load_config(ROOT / "config.example.yaml", {"VETBOT_WECHAT__API_BASE": REAL_API,
                                                     "VETBOT_SERVER__SECRET_KEY": GOOD_KEY})
    assert check_secret_key(ok) is None


@pytest.mark.parametrize(("env", "says"), [
    ({"VETBOT_WECHAT__API_BASE": REAL_API}, "server.secret_key is a sample value"),
    ({"VETBOT_WECHAT__API_BASE": REAL_API, "VETBOT_SERVER__SECRET_KEY": "abc123def456"}, "is too short (12 characters"),
    ({"VETBOT_SERVER__SECRET_KEY": ""}, "server.secret_key is empty"),  # even locally: links must survive restarts
])
def test_serve_exits_2_with_one_line_for_an_unfit_key(env: dict[str, str], says: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
    full.update(PYTHONPATH=str(ROOT), VETBOT_DATABASE__URL="sqlite+aiosqlite:////nonexistent/never-opened.db", **env)
    p = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "-c", str(ROOT / "config.example.yaml")],
                       env=full, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vetbot: ") and says in lines[0], p.stderr
    assert "hint: generate one with `openssl rand -hex 32`" in lines[0]
