"""The outbox: and sms: config sections: bad values are refused at start with the key and the fix."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_config
from tests.conftest import ROOT

EXAMPLE = ROOT / "config.example.yaml"


def test_example_sections_load() -> None:
    cfg = load_config(EXAMPLE, {})
    assert cfg.outbox.concurrency == 32 and cfg.sms.webhook_url == ""
    # Every push purpose has a template, so the local default setup delivers every push (verification
    # codes go by SMS to a phone and never by template).
    from storage.outbox import PURPOSES, SMS_ONLY_PURPOSES

    wechat = set(PURPOSES) - SMS_ONLY_PURPOSES
    assert wechat <= set(cfg.templates) and all(cfg.templates[p].template_id for p in wechat)


@pytest.mark.parametrize(("env", "message"), [
    ({"VETBOT_OUTBOX__CONCURRENCY": "0"}, "outbox.concurrency must be at least 1"),
    ({"VETBOT_OUTBOX__CLAIM_TIMEOUT_S": "0"}, "outbox.claim_timeout_s must be more than 0"),
    ({"VETBOT_OUTBOX__BACKOFF_MAX_S": "1"}, "backoff_max_s must not be smaller"),
    ({"VETBOT_SMS__WEBHOOK_URL": "sms.example.org/send"}, "sms.webhook_url must start with http"),
    ({"VETBOT_SMS__WEBHOOK_URL": "http://127.0.0.1:9/sms", "VETBOT_SMS__BODY_TEMPLATE": "phone={phone}&text={text}"},
     "sms.body_template is not valid JSON"),
    ({"VETBOT_SMS__WEBHOOK_URL": "http://127.0.0.1:9/sms", "VETBOT_SMS__BODY_TEMPLATE": '{"to": "{phone}"}'},
     "must contain both {phone} and {text}"),
])
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, env)
    assert message in str(e.value) and str(e.value).startswith(str(EXAMPLE))
