"""Conformance against third-party data in ../shared/wechat-conformance (official vectors, wechatpy and
WeRoBot message corpora). Every positive vector must verify, every negative one must fail, and every
well-formed, non-templated XML posted to the running server gets 200 with `success`, an empty body, or
a well-formed reply addressed back to the sender."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from unittest import mock

import pytest
import xmltodict
from aiohttp.test_utils import TestClient
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from bot.config import ConfigError
from bot.sim import signature
from tests.conftest import CONFORMANCE, make_config
from tests.helpers import app_client

if not CONFORMANCE.is_dir():  # pragma: no cover - the data ships beside the repo
    pytest.fail(f"conformance data not found at {CONFORMANCE} (set VETBOT_SHARED)", pytrace=False)

VECTORS: dict[str, Any] = json.loads((CONFORMANCE / "crypto_vectors.json").read_text(encoding="utf-8"))
INDEX: list[dict[str, Any]] = json.loads((CONFORMANCE / "xml_index.json").read_text(encoding="utf-8"))
# WeCom-flavoured vectors of wechatpy tests/test_crypto.py (same algorithm), see the corpus README.
WECOM = {"token": "123456", "key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "appid": "wx49f0ab532d5d035a"}


@pytest.mark.parametrize("v", VECTORS["plain_signature"], ids=lambda v: v["id"])
def test_plain_signature_vectors(v: dict[str, str]) -> None:
    check_signature(v["token"], v["signature"], v["timestamp"], v["nonce"])
    assert signature(v["token"], v["timestamp"], v["nonce"]) == v["signature"]
    if "negative_signature" in v:
        with pytest.raises(InvalidSignatureException):
            check_signature(v["token"], v["negative_signature"], v["timestamp"], v["nonce"])


@pytest.mark.parametrize("v", VECTORS["aes_encrypt_fixed_random"], ids=lambda v: v["id"])
def test_aes_encrypt_vectors_with_fixed_random(v: dict[str, str]) -> None:
    key = base64.b64decode(v["encoding_aes_key"] + "=")
    with mock.patch.object(PrpCrypto, "get_random_string", return_value=v["random"].encode()):
        ct = PrpCrypto(key).encrypt(v["plaintext"], v["appid"])
    assert (ct.decode() if isinstance(ct, bytes) else ct) == v["ciphertext_b64"]
    back = PrpCrypto(key).decrypt(v["ciphertext_b64"], v["appid"])
    assert (back.decode() if isinstance(back, bytes) else back) == v["plaintext"]
    if "reply_msg_signature" in v:
        assert signature(v["token"], v["reply_timestamp"], v["reply_nonce"], v["ciphertext_b64"]) == v["reply_msg_signature"]


@pytest.mark.parametrize("v", VECTORS["decrypt_message"], ids=lambda v: v["id"])
def test_decrypt_message_vectors(v: dict[str, str]) -> None:
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], v["appid"])
    plain = crypto.decrypt_message(v["post_body"], v["msg_signature"], v["timestamp"], v["nonce"])
    assert (plain.decode() if isinstance(plain, bytes) else plain) == v["expected_plaintext"]
    with pytest.raises(InvalidSignatureException):
        crypto.decrypt_message(v["post_body"], "0" * 40, v["timestamp"], v["nonce"])


def _config(db_url: str, **kw: str):  # type: ignore[no-untyped-def]
    # The vectors carry fixed timestamps from years ago: no window (the server still refuses a
    # (timestamp, nonce) pair reused with another body, so every post below gets its own nonce).
    return make_config(db_url, bot__fallback_flow="help", server__timestamp_window_s=0, **kw)


_nonces = iter(range(10**9))


def _nonce(tag: str) -> str:
    """A fresh nonce, as WeChat sends with every callback."""
    return f"{tag}{next(_nonces)}"


@pytest.mark.parametrize("v", VECTORS["decrypt_message"], ids=lambda v: v["id"])
@pytest.mark.parametrize("mode", ["safe", "compat"])
async def test_decrypt_vectors_through_the_running_server(db_url: str, v: dict[str, str], mode: str) -> None:
    cfg = _config(db_url, wechat__token=v["token"], wechat__encoding_aes_key=v["encoding_aes_key"],
                  wechat__appid=v["appid"], wechat__mode=mode)
    async with app_client(cfg) as (client, _):
        q = {"timestamp": v["timestamp"], "nonce": v["nonce"], "msg_signature": v["msg_signature"],
             "encrypt_type": "aes", "signature": signature(v["token"], v["timestamp"], v["nonce"])}
        r = await client.post(cfg.server.path, params=q, data=v["post_body"].encode())
        assert r.status == 200
        body = await r.text()
        sender = xmltodict.parse(v["expected_plaintext"])["xml"]["FromUserName"]
        _assert_reply_ok(body, sender, WeChatCrypto(v["token"], v["encoding_aes_key"], v["appid"]))
        r = await client.post(cfg.server.path, params={**q, "msg_signature": "1" * 40}, data=v["post_body"].encode())
        assert r.status == 403


def test_verify_url_vector_decrypts_echostr() -> None:
    (v,) = VECTORS["verify_url_echostr"]
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], v["appid"])
    # wechatpy's private _check_signature on purpose: this only checks the third-party vector itself (the
    # bot never decrypts an echostr, see the next test), and wechatpy 1.8.18 has no public call for
    # "msg_signature over a bare ciphertext, then decrypt" — decrypt_message wants it inside XML.
    plain = crypto._check_signature(v["msg_signature"], v["timestamp"], v["nonce"], v["echostr"], PrpCrypto)
    assert (plain.decode() if isinstance(plain, bytes) else plain) == v["expected_plaintext"]


async def test_url_check_answers_the_echostr_unchanged_and_never_decrypts_one(db_url: str) -> None:
    """The Official Account's URL check is the plain ``signature`` with ``echostr`` echoed unchanged.
    The vector's WeCom-style check (``msg_signature`` over an encrypted echostr) is not answered: it made
    the URL decrypt any ciphertext for whoever held the token."""
    (v,) = VECTORS["verify_url_echostr"]
    cfg = _config(db_url, wechat__token=v["token"], wechat__encoding_aes_key=v["encoding_aes_key"],
                  wechat__appid=v["appid"])
    async with app_client(cfg) as (client, _):
        q = {k: v[k] for k in ("timestamp", "nonce", "echostr", "msg_signature")}
        r = await client.get(cfg.server.path, params=q)
        assert r.status == 403 and v["expected_plaintext"] not in await r.text()
        signed = {**q, "signature": signature(v["token"], v["timestamp"], v["nonce"])}
        r = await client.get(cfg.server.path, params=signed)
        assert (r.status, await r.text()) == (200, v["echostr"])  # unchanged: still the ciphertext


def test_negative_cases() -> None:
    cases = {c["id"]: c for c in VECTORS["negative_cases"]}
    with pytest.raises(ConfigError, match="43 characters"):
        make_config("sqlite+aiosqlite:///:memory:", wechat__encoding_aes_key=cases["illegal_key"]["encoding_aes_key"])
    with pytest.raises(Exception):  # noqa: B017 - wechatpy asserts on the key length
        WeChatCrypto("t", cases["illegal_key"]["encoding_aes_key"], "wx")
    (v,) = [d for d in VECTORS["decrypt_message"] if d["id"] == "C"]
    with pytest.raises(InvalidSignatureException):
        WeChatCrypto(v["token"], v["encoding_aes_key"], v["appid"]).decrypt_message(
            v["post_body"], cases["bad_signature"]["msg_signature"], v["timestamp"], v["nonce"])


def _assert_reply_ok(body: str, sender: str | None, crypto: WeChatCrypto | None = None) -> None:
    body = body.strip()
    if body in ("", "success"):
        return
    data = xmltodict.parse(body)["xml"]
    if "Encrypt" in data:
        assert crypto is not None
        plain = crypto.decrypt_message(body, data["MsgSignature"], data["TimeStamp"], data["Nonce"])
        data = xmltodict.parse(plain)["xml"]
    assert data["ToUserName"] == sender, f"reply addressed to {data.get('ToUserName')!r}, not the sender {sender!r}"
    assert data.get("MsgType")


PLAIN_XML = [e for e in INDEX if e["well_formed"] and not e["templated"] and not e["encrypted"]]
ENCRYPTED_XML = [e for e in INDEX if e["well_formed"] and not e["templated"] and e["encrypted"]]


def _sender(xml: str) -> str | None:
    try:
        return xmltodict.parse(xml)["xml"].get("FromUserName")
    except Exception:
        return None


async def _post_signed(client: TestClient, cfg: Any, xml: str) -> tuple[int, str]:
    ts, nonce = str(int(time.time())), _nonce("corpus")
    q = {"signature": signature(cfg.wechat.token, ts, nonce), "timestamp": ts, "nonce": nonce}
    r = await client.post(cfg.server.path, params=q, data=xml.encode("utf-8"))
    return r.status, await r.text()


@pytest.mark.parametrize("mode", ["plain", "compat"])
async def test_every_wellformed_corpus_message_is_accepted(db_url: str, mode: str) -> None:
    """Plain callbacks pass in plain and compatible mode (safe mode refuses them: see below)."""
    assert len(PLAIN_XML) >= 150, "the corpus should hold 160 plain, literal messages"
    cfg = _config(db_url, wechat__mode=mode, **({"wechat__encoding_aes_key": ""} if mode == "plain" else {}))
    failures = []
    async with app_client(cfg) as (client, _):
        for entry in PLAIN_XML:
            xml = (CONFORMANCE / entry["file"]).read_text(encoding="utf-8")
            status, body = await _post_signed(client, cfg, xml)
            try:
                assert status == 200, f"HTTP {status}: {body[:100]}"
                _assert_reply_ok(body, _sender(xml))
            except AssertionError as e:
                failures.append(f"{entry['file']}: {e}")
    assert not failures, "\n".join(failures)


async def test_safe_mode_refuses_every_plain_corpus_message(db_url: str) -> None:
    cfg = _config(db_url, wechat__mode="safe")
    async with app_client(cfg) as (client, _):
        statuses = {(await _post_signed(client, cfg, (CONFORMANCE / e["file"]).read_text(encoding="utf-8")))[0]
                    for e in PLAIN_XML}
    assert statuses == {403}


@pytest.mark.parametrize("mode", ["safe", "compat"])
async def test_encrypted_corpus_messages_decrypt_and_are_accepted(db_url: str, mode: str) -> None:
    assert len(ENCRYPTED_XML) == 3
    cfg = _config(db_url, wechat__token=WECOM["token"], wechat__encoding_aes_key=WECOM["key"],
                  wechat__appid=WECOM["appid"], wechat__mode=mode)
    crypto = WeChatCrypto(WECOM["token"], WECOM["key"], WECOM["appid"])
    async with app_client(cfg) as (client, _):
        for entry in ENCRYPTED_XML:
            xml = (CONFORMANCE / entry["file"]).read_text(encoding="utf-8")
            enc = xmltodict.parse(xml)["xml"]["Encrypt"]
            plain = crypto.decrypt_message(xml, signature(WECOM["token"], "1", "2", enc), "1", "2")
            ts, nonce = str(int(time.time())), _nonce("enc")
            q = {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes",
                 "signature": signature(WECOM["token"], ts, nonce),
                 "msg_signature": signature(WECOM["token"], ts, nonce, enc)}
            r = await client.post(cfg.server.path, params=q, data=xml.encode())
            assert r.status == 200, entry["file"]
            _assert_reply_ok(await r.text(), _sender(plain), crypto)
