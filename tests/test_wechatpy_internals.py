"""wechatpy internals vetbot uses on purpose (see the comments where they are used). If an upgrade of
wechatpy changes them, these fail — instead of every message silently reading as empty."""

from __future__ import annotations

import pytest
from wechatpy import parse_message

from bot.gateway import dedup_key, to_inbound
from bot.sim import event_xml, text_xml


def test_parsed_messages_keep_their_raw_fields_in__data() -> None:
    msg = parse_message(text_xml("u_raw", "你好", msg_id=1234567890123456789, create_time=1700000000))
    assert isinstance(msg._data, dict), "wechatpy no longer keeps the raw fields in BaseMessage._data"
    assert msg._data["Content"] == "你好" and msg._data["MsgId"] == "1234567890123456789"
    inbound = to_inbound(msg)
    assert inbound is not None and (inbound.kind, inbound.text, inbound.msg_id) == ("text", "你好", 1234567890123456789)
    assert dedup_key(msg) == "m:u_raw:1234567890123456789"


def test_a_msgid_wechatpy_cannot_convert_is_still_read() -> None:
    """The reason for reading ``_data``: the typed attribute raises on a MsgId that is not a number."""
    msg = parse_message(text_xml("u_raw", "你好").replace("<MsgId>", "<MsgId>x", 1))
    with pytest.raises(ValueError):
        _ = msg.id
    inbound = to_inbound(msg)
    assert inbound is not None and inbound.text == "你好" and inbound.msg_id is None
    assert dedup_key(msg).startswith("m:u_raw:x")


def test_event_fields_come_from_the_raw_dict() -> None:
    msg = parse_message(event_xml("u_raw", "subscribe", "qrscene_team:3", create_time=1700000001))
    inbound = to_inbound(msg)
    assert inbound is not None and (inbound.kind, inbound.event, inbound.event_key) == \
        ("event", "subscribe", "qrscene_team:3")
    # wechatpy rewrites a QR follow in the raw dict (event subscribe_scan, key without qrscene_); the key is
    # the same for every retry, which is all the dedup needs.
    assert dedup_key(msg) == "e:u_raw:1700000001:subscribe_scan:team:3"
