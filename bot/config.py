"""Configuration: one YAML file, validated against the dataclasses below.

``config.example.yaml`` is the documented schema. Unknown keys are errors naming the key's path and
the nearest valid name; every key can be overridden by an environment variable
``VETBOT_<SECTION>__<KEY>`` (nested keys joined with ``__``), so secrets stay out of files::

    VETBOT_WECHAT__TOKEN=... VETBOT_DATABASE__URL=postgresql+asyncpg://... vetbot serve -c vetbot.yaml

Relative file paths in the config are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.yamlfile import DuplicateKeyError, UniqueKeyLoader, check_unique_keys


class ConfigError(Exception):
    """A configuration problem, phrased so an operator can fix it (file, line, key, hint)."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/wechat"
    # Base URL users' phones reach this server at; links in template messages and chat point here.
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 256 * 1024
    # Reject callbacks whose `timestamp` query parameter is further than this from our clock (replay guard).
    timestamp_window_s: int = 300
    # Answer within this budget; a slower turn answers `success` and its reply goes out through the outbox.
    reply_budget_s: float = 4.0
    # Key for HMAC-signed links (answer pages, memorial tribute links). Keep it secret; changing it
    # invalidates links already sent. `vetbot serve` refuses an empty, sample or short key (see
    # :func:`secret_key_problem`) unless it runs against the bundled fake WeChat API on loopback.
    secret_key: str = ""
    # Slow clients (the proxy in front is a second line, not the only one): a new connection must
    # deliver a whole request head within header_timeout_s, a request body must arrive within
    # body_timeout_s, an idle keep-alive connection is closed after keepalive_timeout_s, and at most
    # max_connections are open at once (at the cap the oldest idle one makes room; if none is idle the
    # newcomer gets 503). Keep max_connections well below the process's open-file limit (ulimit -n).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0
    keepalive_timeout_s: float = 75.0
    max_connections: int = 512


@dataclass
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///vetbot.db"
    echo: bool = False
    pool_size: int = 10
    # SQLite only: NORMAL survives a crash of the process (WAL); FULL also survives power loss.
    sqlite_synchronous: str = "FULL"


@dataclass
class WeChatConfig:
    appid: str = ""
    secret: str = ""
    token: str = ""
    # 43 characters for safe/compatible mode; empty = plaintext mode.
    encoding_aes_key: str = ""
    # The console's 消息加解密方式: safe (安全模式: only encrypted callbacks), compat (兼容模式: both;
    # an encrypted copy always wins) or plain (明文模式). Empty: safe with an encoding_aes_key, else plain.
    mode: str = ""
    api_base: str = "https://api.weixin.qq.com"
    timeout_s: float = 10.0
    # OAuth 网页授权 (snsapi_base): where WeChat's browser is sent to learn who opens a member page; the
    # fake WeChat server's address in tests and the demo. ``oauth: false`` (no 网页授权 on the account):
    # pages in WeChat ask for the phone's last four digits instead.
    oauth_base: str = "https://open.weixin.qq.com"
    oauth: bool = True


@dataclass
class BotConfig:
    intents_dir: str = "intents"
    # Flow for text no intent claims (policy Q&A answers free questions).
    fallback_flow: str = "policy_qa"
    conversation_timeout_min: int = 30
    max_reasks: int = 3
    dedup_ttl_h: int = 48
    timezone: str = "Asia/Shanghai"
    # rapidfuzz scores (0-100) for matching intent examples.
    fuzzy_accept: float = 88.0
    fuzzy_suggest: float = 65.0
    # openids that get the staff role when they first write (more can be granted with `vetbot users role`).
    staff_openids: list[str] = field(default_factory=list)
    # The county's townships and sub-districts (乡镇/街道). 我的信息 matches what people type (城关, 俺是城关的,
    # 城關鎮, 成关) to one of them and stores that name, so `broadcast --township` finds them; empty = free text.
    townships: list[str] = field(default_factory=list)
    welcome: str = (
        "您好，欢迎关注！这里是退役军人服务号。可以直接打字提问，比如“优待证怎么办”。"
        "回复“帮助”随时查看功能，回复“人工”给工作人员留言。"
    )


@dataclass
class OutboxConfig:
    # Run the push sender in `vetbot serve` (every process may run one; on SQLite run one process).
    enabled: bool = True
    # Pushes in flight at once per process, and rows claimed per database round trip.
    concurrency: int = 32
    batch_size: int = 200
    # How often to look for due pushes when nothing in this process woke the sender.
    poll_interval_s: float = 0.5
    # Tries per push before it is `failed`; retries wait base*2^(n-1) s (randomised to 50-100%), capped.
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    # Requests per second per API path (0 = unlimited).
    rate_per_s: float = 0.0
    # Customer-service (kefu) message rules from WeChat, configurable in case they change.
    kefu_window_h: float = 48.0
    kefu_quota_after_message: int = 5
    kefu_event_window_s: float = 60.0
    kefu_quota_after_event: int = 3
    # How long a claimed row may stay 'sending' before another sender may take it over.
    claim_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"outbox.{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("poll_interval_s", "backoff_base_s", "claim_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"outbox.{name} must be more than 0 (got {getattr(self, name)})")
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("outbox.backoff_max_s must not be smaller than outbox.backoff_base_s")
        if self.rate_per_s < 0:
            raise ConfigError("outbox.rate_per_s must be 0 (unlimited) or more")


def _check_fields(raw: Any, where: str) -> None:
    """Keyword fields only: WeChat's current templates name fields by type (thing1, time2 …); the old
    ``first``/``remark``/``keywordN`` fields are refused with a hint and the line they are on."""
    from bot.template_rules import field_kind, retired_hint

    if isinstance(raw, _EnvText):
        raw = _from_env_text(raw, structured=True)
    if not isinstance(raw, dict):
        return
    lines = raw.get("__lines__", {})
    for name in raw:
        if name == "__lines__":
            continue
        at = f"line {lines[name]}: " if name in lines else ""
        hint = retired_hint(str(name))
        if hint:
            raise ConfigError(f"{at}{where}.{name}: {hint}")
        if field_kind(str(name)) is None:
            raise ConfigError(f"{at}{where}.{name}: not a WeChat keyword field; fields are named by type and "
                              "number as on the template's detail page: thing1, time2, date3, phrase4, "
                              "character_string5, number6, amount7, name8, phone_number9, car_number10")


@dataclass
class SubscribeSpec:
    """The 订阅通知 (subscribe notice) template of a push purpose."""

    template_id: str = ""
    # long_term: one consent, many notices (public services such as 政务民生); one_time: one per consent.
    kind: str = "one_time"
    # Keyword field -> format string over the push; empty = the same fields as the template message.
    fields: dict[str, str] = field(default_factory=dict)
    # The template's title and field labels as WeChat shows them (for `vetbot templates preview`).
    title: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("one_time", "long_term"):
            raise ConfigError(f"subscribe.kind must be one_time or long_term (got {self.kind!r})")

    @classmethod
    def _config_check(cls, key: str, raw: Any, where: str) -> None:
        if key == "fields":
            _check_fields(raw, where)


@dataclass
class TemplateSpec:
    """The template message (模板消息) of a push purpose, and optionally its 订阅通知 template."""

    template_id: str = ""
    # Keyword field -> format string over the push's payload, e.g. {"thing1": "{title}", "time2": "{time}"}.
    fields: dict[str, str] = field(default_factory=dict)
    # Link opened by the template message; a format string over the payload (e.g. "{url}").
    url: str = "{url}"
    # The template's title and field labels as WeChat shows them (for `vetbot templates preview`).
    title: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # The 订阅通知 template of the same purpose (sent instead of the template message where the person
    # gave consent); None = none.
    subscribe: SubscribeSpec | None = None

    @classmethod
    def _config_check(cls, key: str, raw: Any, where: str) -> None:
        if key == "fields":
            _check_fields(raw, where)


@dataclass
class TemplateRulesConfig:
    """WeChat's keyword rules (see bot/template_rules.py); change only if WeChat changes them."""

    # Longest value per keyword type, in characters (the official 订阅通知 page's numbers).
    max_chars: dict[str, int] = field(default_factory=lambda: {
        "thing": 20, "number": 32, "letter": 32, "symbol": 5, "character_string": 32, "amount": 10,
        "phone_number": 17, "car_number": 8, "name": 10, "phrase": 5})
    # How times are written: short = 12月5日 14:30, full = 2026年12月5日 14:30 (the documented form).
    time_style: str = "short"

    def __post_init__(self) -> None:
        if self.time_style not in ("short", "full"):
            raise ConfigError(f"template_rules.time_style must be short or full (got {self.time_style!r})")
        for k, v in self.max_chars.items():
            if v < 1:
                raise ConfigError(f"template_rules.max_chars.{k} must be at least 1")

    def rules(self) -> Any:
        """The :class:`bot.template_rules.Rules` of this section."""
        from bot.template_rules import DEFAULT_MAX_CHARS, Rules

        return Rules(max_chars={**DEFAULT_MAX_CHARS, **self.max_chars}, time_style=self.time_style)


@dataclass
class SpeechConfig:
    """A speech recogniser for voice messages WeChat did not transcribe (its Recognition is retiring)."""

    # POST the voice (AMR/Speex bytes) here; answer JSON {"text": "..."}. Empty = off.
    webhook_url: str = ""
    # HMAC-SHA256 of the raw body, sent as "<hmac_header>: sha256=<hex>" (empty secret: no header).
    hmac_secret: str = ""
    hmac_header: str = "X-Vetbot-Signature"
    timeout_s: float = 8.0
    # Voice files larger than this are not downloaded (WeChat's voice messages are at most 60 s, ~100 KB).
    max_bytes: int = 2_000_000

    def __post_init__(self) -> None:
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"speech.webhook_url must start with http:// or https:// (got {self.webhook_url!r})")
        if self.timeout_s <= 0:
            raise ConfigError("speech.timeout_s must be more than 0")


@dataclass
class SmsConfig:
    # The SMS relay/provider endpoint; empty = no SMS channel.
    webhook_url: str = ""
    # JSON body; {placeholders} inside its strings: phone, text, url, title, content, purpose, key, data fields.
    body_template: str = '{"phone": "{phone}", "text": "{text}"}'
    # HMAC-SHA256 of the raw body, sent as "<hmac_header>: sha256=<hex>" (empty secret: no header).
    hmac_secret: str = ""
    hmac_header: str = "X-Vetbot-Signature"
    timeout_s: float = 10.0
    # Inbound SMS (POST /sms/inbound, signed the same way with hmac_secret): a message whose "ts" is
    # further than this from now is refused (a replay); inside it the message id is remembered.
    inbound_window_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.webhook_url:
            return
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"sms.webhook_url must start with http:// or https:// (got {self.webhook_url!r})")
        try:
            json.loads(self.body_template)
        except ValueError as e:
            raise ConfigError(f"sms.body_template is not valid JSON ({e}); example: "
                              '\'{"phone": "{phone}", "text": "{text}"}\'') from None
        if "{phone}" not in self.body_template or "{text}" not in self.body_template:
            raise ConfigError("sms.body_template must contain both {phone} and {text}")
        if self.timeout_s <= 0:
            raise ConfigError("sms.timeout_s must be more than 0")


@dataclass
class SchedulerConfig:
    enabled: bool = True
    tick_s: float = 5.0


@dataclass
class QAConfig:
    kb: list[str] = field(default_factory=lambda: ["data/kb/policy.yaml"])
    synonyms: str = "data/kb/synonyms.yaml"
    userdict: str = "data/kb/userdict.txt"
    use_encoder: bool = True
    cache_dir: str = ""


@dataclass
class CallupTypeConfig:
    """Per call-up type overrides of the escalation timing (empty = the callup: default)."""

    renotify_after_min: int | None = None
    renotify_max: int | None = None
    widen_after_min: int | None = None
    staff_alert_after_min: int | None = None
    late_counts: bool | None = None


@dataclass
class CallupConfig:
    # Answer links stay valid this long after the call-up is created.
    link_ttl_h: int = 72
    # Escalation chain, frozen into each call-up at creation; each wait counts from the previous step:
    # re-notify non-responders every renotify_after_min (at most renotify_max times), then widen to
    # the other teams of the same townships, then to all teams (widen_after_min each), then alert
    # staff (staff_alert_after_min) that the quorum is not met.
    renotify_after_min: int = 10
    renotify_max: int = 2
    widen_after_min: int = 20
    staff_alert_after_min: int = 30
    # Whether 晚到 (late) answers count toward the quorum.
    late_counts: bool = False
    # Call-up types offered in the guided flow; per-type overrides of the timing above in `types`.
    kinds: list[str] = field(default_factory=lambda: ["防汛", "森林防火", "地震", "搜救", "其他"])
    types: dict[str, CallupTypeConfig] = field(default_factory=dict)
    # Skills a roster may name (CSV column skills, separated by |); anything else is a typo.
    skills: list[str] = field(default_factory=lambda: ["救援", "医护", "驾驶", "水上", "无人机", "电工"])
    # Staff roster page links (集结状态) stay valid this long.
    staff_link_ttl_h: int = 12
    # The escalation auditor (tick callup_audit) alerts staff once per problem about an active call-up
    # whose next escalation step is overdue by audit_overdue_min, or whose member pushes fail (failed, or
    # retried twice or more) for at least audit_min_failed of them and audit_failed_pct % of all.
    audit_overdue_min: int = 5
    audit_failed_pct: int = 20
    audit_min_failed: int = 3
    # Binding a WeChat user to a roster member (绑定): attempts that do not bind (a wrong team code, every
    # phone submitted, a wrong SMS code) are limited per WeChat user and per team within bind_window_min.
    # With sms.webhook_url set, a code valid bind_code_ttl_min goes to the roster phone; without it the
    # team leader or staff approve the request (it expires after bind_request_ttl_h).
    bind_window_min: int = 30
    bind_max_attempts: int = 6
    bind_team_max_attempts: int = 30
    bind_code_ttl_min: int = 10
    bind_request_ttl_h: int = 48

    def __post_init__(self) -> None:
        if self.audit_overdue_min < 1:
            raise ConfigError(f"callup.audit_overdue_min must be at least 1 (got {self.audit_overdue_min})")
        if not 1 <= self.audit_failed_pct <= 100:
            raise ConfigError(f"callup.audit_failed_pct must be 1-100 (got {self.audit_failed_pct})")
        if self.audit_min_failed < 1:
            raise ConfigError(f"callup.audit_min_failed must be at least 1 (got {self.audit_min_failed})")
        for name in ("bind_window_min", "bind_max_attempts", "bind_team_max_attempts", "bind_code_ttl_min",
                     "bind_request_ttl_h"):
            if getattr(self, name) < 1:
                raise ConfigError(f"callup.{name} must be at least 1 (got {getattr(self, name)})")


@dataclass
class MemorialConfig:
    # Sensitive-word list for free-text 寄语 (one per line, # comments); reloaded when staff edit it.
    wordlist: str = "data/memorial/sensitive_words.txt"
    # One-tap 寄语, public at once (free text waits for staff review).
    preset_messages: list[str] = field(default_factory=lambda: [
        "英雄永垂不朽", "致敬英烈，缅怀先烈", "山河无恙，英雄安息", "吾辈自强，告慰英灵",
    ])
    # Local hour (bot.timezone) from which campaign-day reminders are queued.
    reminder_hour: int = 8
    # Search results per page in chat.
    page_size: int = 5
    # Personal memorial page links (tribute buttons and 寄语 without login; an opaque token stored hashed)
    # stay valid this long. Short: a forwarded link should not outlive the afternoon.
    link_ttl_h: int = 6
    # Free-text 寄语 length limit, and how many 寄语 one user may leave on one target per day.
    message_max_chars: int = 200
    messages_per_day: int = 3
    # Biography characters shown on the chat card (the page shows all of it).
    bio_chars: int = 120


def _job_categories() -> dict[str, list[str]]:
    return {
        "保安": ["保安", "安保", "门卫", "巡逻", "押运", "安检"],
        "司机": ["司机", "驾驶员", "驾驶", "货车", "客车", "配送员"],
        "物流": ["物流", "快递", "仓管", "仓库", "搬运", "分拣"],
        "技工": ["电工", "焊工", "维修", "机修", "技工", "钳工", "水电"],
        "普工": ["普工", "操作工", "装配", "包装", "生产线"],
        "厨师餐饮": ["厨师", "厨工", "服务员", "餐饮", "面点"],
        "销售": ["销售", "业务员", "导购", "客户经理"],
        "文员管理": ["文员", "行政", "管理", "助理", "人事", "主管"],
        "教练": ["教练", "教官", "军训", "体能", "培训师"],
        "物业保洁": ["物业", "保洁", "绿化", "楼管"],
    }


@dataclass
class JobsConfig:
    # Instant alerts per user per local day; further matches roll into the next digest.
    instant_max_per_day: int = 3
    # Postings listed in a daily digest push (the link shows all).
    digest_size: int = 5
    # Postings per page when browsing (找工作).
    page_size: int = 5
    # Local time of the digest for instant subscribers' overflow, and the default for daily ones.
    default_digest_time: str = "08:00"
    # Default quiet hours (local, start-end; "" = none); nothing is pushed inside them.
    default_quiet_hours: str = "22:00-07:00"
    # Signed links in job pushes stay valid this long.
    link_ttl_days: int = 30
    # Categories offered when subscribing: name -> words looked for in the title/requirements.
    categories: dict[str, list[str]] = field(default_factory=_job_categories)


@dataclass
class ConsoleConfig:
    """The staff console under /staff/ (login by scanning a QR code in WeChat or by a one-time link)."""

    enabled: bool = True
    # A console session ends after this many minutes without a request, and in any case after
    # session_max_h hours (the staff member logs in again by scanning the QR code).
    session_idle_min: int = 30
    session_max_h: int = 12
    # One-time login links (登录后台 in chat, `vetbot console link`) expire after this many minutes (1-10).
    link_ttl_min: int = 10
    # The login page's QR code expires after this many seconds (60-1800); the page then offers a new one.
    qr_ttl_s: int = 300
    # 导入: the largest CSV file staff may upload (KB, 16-10240).
    upload_max_kb: int = 2048

    def __post_init__(self) -> None:
        if not 16 <= self.upload_max_kb <= 10240:
            raise ConfigError(f"console.upload_max_kb must be between 16 and 10240 (got {self.upload_max_kb})")
        if self.session_idle_min < 1:
            raise ConfigError(f"console.session_idle_min must be at least 1 (got {self.session_idle_min})")
        if self.session_max_h < 1:
            raise ConfigError(f"console.session_max_h must be at least 1 (got {self.session_max_h})")
        if not 1 <= self.link_ttl_min <= 10:
            raise ConfigError(f"console.link_ttl_min must be between 1 and 10 minutes (got {self.link_ttl_min}): "
                              "a login link is a key to the console, keep it short-lived")
        if not 60 <= self.qr_ttl_s <= 1800:
            raise ConfigError(f"console.qr_ttl_s must be between 60 and 1800 seconds (got {self.qr_ttl_s})")


@dataclass
class PrivacyConfig:
    """个人信息保护: the notice, erasure and how long each kind of personal data is kept (days; 0 = keep)."""

    # The 个人信息保护提示 (YAML the bureau edits); bump its version and people are asked again.
    notice: str = "data/privacy/notice.yaml"
    # Personal data of someone who unfollowed is erased this many days later (not if on a team roster).
    unfollow_erase_days: int = 30
    # 我的数据 page links (view + JSON download) stay valid this many minutes.
    export_link_ttl_min: int = 15
    # SQLite: after an erasure, VACUUM + WAL checkpoint so erased bytes leave the file. -1 = at the next
    # privacy_compact tick (within a minute); 0-23 = only during that local hour (VACUUM holds every turn
    # for as long as it takes on a big file).
    compact_hour: int = -1
    # Retention (days): idle conversation state; closed tickets; push texts; push rows; rejected 寄语;
    # the per-user sent-postings log; digest rows; cancelled job subscriptions; unanswered-question stats;
    # rate-limit records (binding attempts and requests, voice hints).
    conversation_days: int = 30
    ticket_days: int = 365
    push_text_days: int = 30
    push_row_days: int = 400
    rejected_message_days: int = 90
    jobs_sent_days: int = 180
    jobs_digest_days: int = 60
    cancelled_subscription_days: int = 30
    qa_gap_days: int = 365
    # Records kept only to limit how often something happens (binding attempts and requests, the daily
    # voice-message hint).
    short_lived_days: int = 7

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and f.name != "compact_hour" and v < 0:
                raise ConfigError(f"privacy.{f.name} must be 0 or more (got {v})")
        if self.export_link_ttl_min < 1:
            raise ConfigError("privacy.export_link_ttl_min must be at least 1")
        if not -1 <= self.compact_hour <= 23:
            raise ConfigError("privacy.compact_hour must be -1 (right away) or an hour 0-23")

    def retention_days(self) -> dict[str, int]:
        """Every ``*_days`` key with its value (retention rules name them; :func:`storage.privacy.purge`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.endswith("_days")}


@dataclass
class LoggingConfig:
    level: str = "INFO"


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    wechat: WeChatConfig = field(default_factory=WeChatConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    templates: dict[str, TemplateSpec] = field(default_factory=dict)
    template_rules: TemplateRulesConfig = field(default_factory=TemplateRulesConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    callup: CallupConfig = field(default_factory=CallupConfig)
    memorial: MemorialConfig = field(default_factory=MemorialConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    # WeChat custom menu (the JSON body of /cgi-bin/menu/create), pushed with `vetbot menu push`.
    menu: dict[str, Any] = field(default_factory=dict)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Folder of the config file; relative paths are resolved against it. Not a YAML key.
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    # Where the values came from, for messages that name the file and line (not YAML keys).
    source: str = field(default="<defaults>", metadata={"internal": True})
    lines: dict[str, int] = field(default_factory=dict, metadata={"internal": True})
    env_keys: set[str] = field(default_factory=set, metadata={"internal": True})

    def path(self, p: str | os.PathLike[str]) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        q = Path(p)
        return q if q.is_absolute() else (self.base_dir / q)

    @property
    def wechat_mode(self) -> str:
        """``safe``, ``compat`` or ``plain``: ``wechat.mode``, or derived from the AES key when empty."""
        return self.wechat.mode.strip().lower() or ("safe" if self.wechat.encoding_aes_key else "plain")

    def where(self, path: str) -> str:
        """Where key ``path`` (``wechat.token``) was set, for an error message: ``file:line``, the
        environment variable, or the file with a note that the key is not in it."""
        if path in self.env_keys:
            return f"environment variable VETBOT_{path.upper().replace('.', '__')}"
        line = self.lines.get(path)
        if line:
            return f"{self.source}:{line}"
        return f"{self.source} ({path} not set)"


# ---------------------------------------------------------------------------------------------------------
# Loading


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    check_unique_keys(node)  # PyYAML keeps the last of two equal keys without a word
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[str(key_node.value)] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type; raise ConfigError with a hint."""
    origin = typing.get_origin(tp)
    if isinstance(value, _EnvText):
        try:
            value = _from_env_text(value, structured=origin in (list, dict) or dataclasses.is_dataclass(tp) or tp is Any)
        except ConfigError as e:
            raise ConfigError(f"environment variable VETBOT_{where.upper().replace('.', '__')}: {e}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping (section), got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items() if k != "__lines__"}
    if origin is list:
        (it,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, it, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where)
    if tp is Any:
        return _strip_lines(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got a {type(value).__name__}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__lines__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    public = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    names = [f.name for f in public]
    lines = data.get("__lines__", {})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "__lines__":
            continue
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys here: {', '.join(names)}"
            line = lines.get(str(key))
            at = f"line {line}: " if line else ""
            src = f" set by environment variable VETBOT_{path.upper().replace('.', '__')}" if not line else ""
            raise ConfigError(f"{at}unknown key '{path}'{src} ({hint})")
        check = getattr(cls, "_config_check", None)
        if check is not None:
            # Checks that need the raw YAML (with the lines of nested keys) before conversion.
            try:
                check(key, value, path)
            except ConfigError as e:
                line = lines.get(str(key))
                if line and not str(e).startswith("line "):
                    raise ConfigError(f"line {line}: {e}") from None
                raise
        try:
            kwargs[key] = _coerce(value, hints[key], path)
            _check_range(cls, str(key), kwargs[key], path, from_env=isinstance(value, _EnvText))
        except ConfigError as e:
            line = lines.get(str(key))
            # Only errors about this very key get its line; nested sections report their own lines.
            if line and not str(e).startswith("line ") and str(e).startswith(f"{path}:"):
                raise ConfigError(f"line {line}: {e}") from None
            raise
    return cls(**kwargs)


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """Turn VETBOT_SECTION__KEY=value variables into a nested mapping of raw strings.

    Values stay text here; :func:`_coerce` converts them by the type of the field they land on, so a
    URL with colons stays a URL and a token like ``007`` stays ``007``.
    """
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("VETBOT_") or "__" not in name:
            continue
        parts = [p.lower() for p in name[len("VETBOT_"):].split("__")]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _EnvText(raw)
    return out


class _EnvText(str):
    """A value that came from an environment variable (text to be converted by field type)."""


def _from_env_text(value: _EnvText, structured: bool) -> Any:
    """Lists and mappings may be given as YAML flow text ([a, b] / {k: v}) or comma-separated."""
    text = str(value).strip()
    if structured and text[:1] in "[{":
        try:
            return yaml.load(text, Loader=UniqueKeyLoader)
        except DuplicateKeyError as e:
            raise ConfigError(f"{text!r}: {e.problem} (hint: {DuplicateKeyError.HINT})") from None
        except yaml.YAMLError:
            raise ConfigError(f"cannot parse {text!r} as a YAML list/mapping") from None
    if structured:
        return [t.strip() for t in text.split(",") if t.strip()]
    return str(value)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(path: str | os.PathLike[str] | None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file (None: defaults + environment only).

    Raises ConfigError with the file, line and a hint on any problem.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base_dir = Path.cwd()
    label = "<defaults>"
    if path is not None:
        p = Path(path)
        label = str(p)
        base_dir = p.resolve().parent
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: file not found (hint: copy config.example.yaml and edit it)") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text (hint: save the file as UTF-8)") from None
        try:
            loaded = yaml.load(text, Loader=_LineLoader)
        except DuplicateKeyError as e:
            line = e.problem_mark.line + 1 if e.problem_mark else "?"
            raise ConfigError(f"{p}:{line}: {e.problem} (hint: {DuplicateKeyError.HINT})") from None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            line = f"{mark.line + 1}" if mark else "?"
            raise ConfigError(
                f"{p}:{line}: YAML syntax error: {e.problem} (hint: check indentation with spaces, "
                "and quote values containing ':' or '#')"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}:1: the file must be a mapping of sections (server:, database:, …)")
        data = loaded
    lines: dict[str, int] = {}
    _key_lines(data, "", lines)
    env = _env_overrides(environ)
    env_keys: set[str] = set()
    _key_paths(env, "", env_keys)
    data = _merge(data, env)
    try:
        cfg = _build(Config, data, "")
    except ConfigError as e:
        msg = str(e)
        if msg.startswith("line "):
            line, _, rest = msg[5:].partition(": ")
            raise ConfigError(f"{label}:{line}: {rest}") from None
        raise ConfigError(f"{label}: {msg}") from None
    cfg.base_dir, cfg.source, cfg.lines, cfg.env_keys = base_dir, label, lines, env_keys
    _validate(cfg)
    return cfg


def _key_lines(data: Any, prefix: str, out: dict[str, int]) -> None:
    """``section.key`` -> line, for every key of the loaded YAML (nested mappings too)."""
    if not isinstance(data, dict):
        return
    lines = data.get("__lines__", {})
    for k, v in data.items():
        if k == "__lines__":
            continue
        path = f"{prefix}.{k}" if prefix else str(k)
        if str(k) in lines:
            out[path] = lines[str(k)]
        _key_lines(v, path, out)


def _key_paths(data: dict[str, Any], prefix: str, out: set[str]) -> None:
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            _key_paths(v, path, out)
        else:
            out.add(path)


@dataclass(frozen=True)
class _Range:
    """Allowed values of a number: ``lo``..``hi`` (``open_lo``/``open_hi``: the bound itself is not
    allowed), and 0 besides when ``zero_off`` (0 switches the feature off)."""

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False
    zero_off: bool = False
    hint: str = ""

    def allows(self, v: float) -> bool:
        if self.zero_off and v == 0:
            return True
        above = v > self.lo if self.open_lo else v >= self.lo
        below = v < self.hi if self.open_hi else v <= self.hi
        return above and below

    def describe(self) -> str:
        lo = f"more than {_num(self.lo)}" if self.open_lo else f"at least {_num(self.lo)}"
        hi = f"less than {_num(self.hi)}" if self.open_hi else f"at most {_num(self.hi)}"
        text = f"{lo} and {hi}"
        return f"0 (off), or {text}" if self.zero_off else text


_MINUTES_DAY = 24 * 60
_HOURS_YEAR = 365 * 24
_TIMING = {
    "renotify_after_min": _Range(1, _MINUTES_DAY), "renotify_max": _Range(0, 20),
    "widen_after_min": _Range(1, _MINUTES_DAY), "staff_alert_after_min": _Range(1, _MINUTES_DAY),
}
#: Numbers where a negative, a zero or an absurd value would be accepted and then misbehave (a negative
#: timestamp window refuses every callback, a zero body limit every message, a zero TTL runs WeChat's
#: retries twice …). Keyed by dataclass and field; checked with the key's file and line.
_RANGES: dict[str, _Range] = {
    "ServerConfig.port": _Range(1, 65535),
    "ServerConfig.max_body_bytes": _Range(1024, 16 * 1024 * 1024, hint="WeChat's callbacks are a few KB; 262144 is usual"),
    "ServerConfig.timestamp_window_s": _Range(10, 86400, zero_off=True,
                                              hint="WeChat's clock and ours differ by seconds; 300 is usual"),
    "ServerConfig.reply_budget_s": _Range(0, 5, open_lo=True, open_hi=True, hint="WeChat waits 5 s; 4.0 is usual"),
    "ServerConfig.header_timeout_s": _Range(1, 300),
    "ServerConfig.body_timeout_s": _Range(1, 600),
    "ServerConfig.keepalive_timeout_s": _Range(1, 3600, hint="above the proxy's upstream keep-alive; 75 is usual"),
    "ServerConfig.max_connections": _Range(16, 1_000_000, hint="keep it below the open-file limit (ulimit -n)"),
    "DatabaseConfig.pool_size": _Range(1, 1000),
    "WeChatConfig.timeout_s": _Range(0, 120, open_lo=True),
    "BotConfig.conversation_timeout_min": _Range(1, 7 * _MINUTES_DAY),
    "BotConfig.max_reasks": _Range(0, 20),
    "BotConfig.dedup_ttl_h": _Range(1, 720, hint="WeChat retries within seconds; 48 is usual"),
    "BotConfig.fuzzy_accept": _Range(0, 100, hint="rapidfuzz scores run 0-100"),
    "BotConfig.fuzzy_suggest": _Range(0, 100, hint="rapidfuzz scores run 0-100"),
    # outbox: concurrency, batch_size, max_attempts, poll_interval_s, backoff_*, rate_per_s and
    # claim_timeout_s are checked by OutboxConfig.__post_init__ (its own messages).
    "OutboxConfig.kefu_window_h": _Range(0, 168, open_lo=True, hint="WeChat's rule is 48"),
    "OutboxConfig.kefu_quota_after_message": _Range(0, 100, hint="WeChat's rule is 5"),
    "OutboxConfig.kefu_event_window_s": _Range(0, 86400, hint="WeChat's rule is 60"),
    "OutboxConfig.kefu_quota_after_event": _Range(0, 100, hint="WeChat's rule is 3"),
    "SmsConfig.timeout_s": _Range(0, 120, open_lo=True),
    "SmsConfig.inbound_window_s": _Range(10, 3600, hint="300 is usual: the gateway's clock may be a little off"),
    "SchedulerConfig.tick_s": _Range(0, 3600, hint="0 runs every job at its own period"),
    "CallupConfig.link_ttl_h": _Range(1, _HOURS_YEAR),
    "CallupConfig.staff_link_ttl_h": _Range(1, _HOURS_YEAR),
    **{f"CallupConfig.{k}": r for k, r in _TIMING.items()},
    **{f"CallupTypeConfig.{k}": r for k, r in _TIMING.items()},
    "MemorialConfig.reminder_hour": _Range(0, 23, hint="a local hour, 0-23"),
    "MemorialConfig.page_size": _Range(1, 10, hint="numbered choices must fit a phone screen"),
    "MemorialConfig.link_ttl_h": _Range(1, _HOURS_YEAR),
    "MemorialConfig.message_max_chars": _Range(1, 2000),
    "MemorialConfig.messages_per_day": _Range(1, 100),
    "MemorialConfig.bio_chars": _Range(0, 2000),
    "JobsConfig.instant_max_per_day": _Range(0, 100),
    "JobsConfig.digest_size": _Range(1, 20),
    "JobsConfig.page_size": _Range(1, 8, hint="numbered choices must fit a phone screen"),
    "JobsConfig.link_ttl_days": _Range(1, 365),
}


def _check_range(cls: type, key: str, value: Any, path: str, *, from_env: bool) -> None:
    rule = _RANGES.get(f"{cls.__name__}.{key}")
    if rule is None or value is None or isinstance(value, bool) or rule.allows(value):
        return
    hint = f"; {rule.hint}" if rule.hint else ""
    msg = f"{path}: {_num(value)} is out of range (hint: use {rule.describe()}{hint})"
    # Set by a variable: name it, and keep the YAML line (of a value the variable replaced) out of it.
    raise ConfigError(f"environment variable VETBOT_{path.upper().replace('.', '__')}: {msg}" if from_env else msg)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


#: Known sample values of ``server.secret_key`` (ours, and the usual placeholders), compared after
#: lower-casing and dropping everything but letters and digits.
_SAMPLE_KEY_WORDS = ("changeme", "example", "sample", "placeholder", "yoursecret", "secretkey", "replaceme",
                     "notsecret", "insecure", "default", "xxxxxx", "123456")
#: Links are HMAC-SHA256 with this key: 32 characters of a random hex string are 128 bits.
MIN_SECRET_KEY_CHARS = 32


def secret_key_problem(key: str) -> str | None:
    """Why ``server.secret_key`` must not sign links for real users, or None when it is fit to.

    Refused: empty, shorter than 32 characters, a sample or placeholder (the one in
    config.example.yaml, "change-me…", "your-secret…"), or a string of few distinct characters."""
    if not key:
        return "is empty"
    letters = "".join(c for c in key.lower() if c.isalnum())
    if any(w in letters for w in _SAMPLE_KEY_WORDS):
        return "is a sample value (anyone who read config.example.yaml or a tutorial can forge links with it)"
    if len(key) < MIN_SECRET_KEY_CHARS:
        return f"is too short ({len(key)} characters; at least {MIN_SECRET_KEY_CHARS})"
    if len(set(key)) < 8:
        return "is not random (too few different characters)"
    return None


def uses_local_fake_api(cfg: Config) -> bool:
    """True when ``wechat.api_base`` is the bundled fake WeChat API on loopback (a local try-out)."""
    from urllib.parse import urlparse

    try:
        host = urlparse(cfg.wechat.api_base).hostname
    except ValueError:
        return False
    return host in ("127.0.0.1", "localhost", "::1")


def check_secret_key(cfg: Config) -> str | None:
    """Raise ConfigError when ``server.secret_key`` is unfit and the bot talks to a real WeChat API;
    return a warning text when it is unfit but the API is the local fake one; None when it is fine.

    An empty key is refused even locally: signed links must survive restarts (scripts/run.sh keeps a
    generated key in var/secret_key)."""
    problem = secret_key_problem(cfg.server.secret_key)
    if problem is None:
        return None
    where = cfg.where("server.secret_key")
    hint = ("hint: generate one with `openssl rand -hex 32` and set VETBOT_SERVER__SECRET_KEY "
            "(scripts/run.sh keeps one in var/secret_key)")
    if not cfg.server.secret_key:
        raise ConfigError(f"{where}: server.secret_key is empty: answer, tribute and job links need a key that "
                          f"survives restarts ({hint})")
    if uses_local_fake_api(cfg):
        return (f"{where}: server.secret_key {problem}; accepted only because wechat.api_base is the local "
                f"fake WeChat API ({hint})")
    raise ConfigError(f"{where}: server.secret_key {problem}: links signed with it can be forged ({hint})")


def check_callback(cfg: Config) -> None:
    """What the WeChat callback needs, checked where the callback is built (serve, chat, tests)."""
    if not cfg.wechat.token.strip():
        raise ConfigError(f"{cfg.where('wechat.token')}: wechat.token is empty: anyone could sign callbacks "
                          "(hint: copy 令牌(Token) from the WeChat console, 基本配置 → 服务器配置, or set "
                          "VETBOT_WECHAT__TOKEN)")


_MODES = ("safe", "compat", "plain")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _validate(cfg: Config) -> None:
    """Checks across keys, or of text values, each naming the file and line of the key."""
    w = cfg.where
    key = cfg.wechat.encoding_aes_key
    if key and len(key) != 43:
        raise ConfigError(
            f"{w('wechat.encoding_aes_key')}: wechat.encoding_aes_key must be 43 characters (got {len(key)}); "
            "copy it from the WeChat console, or leave it empty for plaintext mode"
        )
    mode = cfg.wechat.mode.strip().lower()
    if mode and mode not in _MODES:
        raise ConfigError(f"{w('wechat.mode')}: wechat.mode {cfg.wechat.mode!r} is not a mode "
                          "(hint: safe, compat or plain, as chosen in the console's 消息加解密方式; "
                          "empty = safe with an encoding_aes_key, else plain)")
    if mode in ("safe", "compat") and not key:
        raise ConfigError(f"{w('wechat.mode')}: wechat.mode is {mode} but wechat.encoding_aes_key is empty "
                          "(hint: copy the EncodingAESKey from the WeChat console, or set mode: plain if "
                          "the console says 明文模式)")
    if mode == "plain" and key:
        raise ConfigError(f"{w('wechat.mode')}: wechat.mode is plain but wechat.encoding_aes_key is set "
                          "(hint: plain mode takes unencrypted callbacks from anyone holding a callback URL; "
                          "set mode: safe (or compat) as in the console, or remove the key)")
    if not cfg.server.path.startswith("/"):
        raise ConfigError(f"{w('server.path')}: server.path must start with '/' (got {cfg.server.path!r})")
    if cfg.database.sqlite_synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise ConfigError(f"{w('database.sqlite_synchronous')}: database.sqlite_synchronous must be "
                          "NORMAL, FULL or EXTRA")
    towns = [t.strip() for t in cfg.bot.townships]
    if any(not t for t in towns) or len(set(towns)) != len(towns):
        dup = next((t for t in towns if towns.count(t) > 1), "")
        raise ConfigError(f"{w('bot.townships')}: bot.townships " + (f"lists '{dup}' twice" if dup else "has an empty name")
                          + " (hint: one name per township, e.g. [城关镇, 竹阳街道])")
    cfg.bot.townships = towns
    if cfg.bot.fuzzy_suggest > cfg.bot.fuzzy_accept:
        raise ConfigError(f"{w('bot.fuzzy_suggest')}: bot.fuzzy_suggest ({cfg.bot.fuzzy_suggest:g}) is above "
                          f"bot.fuzzy_accept ({cfg.bot.fuzzy_accept:g}) (hint: suggest a list below the score "
                          "that routes at once, e.g. 65 and 88)")
    if cfg.logging.level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"{w('logging.level')}: logging.level {cfg.logging.level!r} is not a level "
                          f"(hint: one of {', '.join(_LOG_LEVELS)})")
    _validate_timezone(cfg)
    _validate_templates(cfg)


def _validate_timezone(cfg: Config) -> None:
    """An unknown zone fails only when a local time is first needed (every tribute answered 系统繁忙):
    refuse it at start, with the nearest real name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    tz = cfg.bot.timezone
    try:
        ZoneInfo(tz)
        return
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    zones = available_timezones()
    if not zones:
        hint = "no time zone data on this machine: install the tzdata package (apt-get install tzdata)"
    else:
        near = difflib.get_close_matches(tz, sorted(zones), n=1, cutoff=0.6)
        hint = f"did you mean '{near[0]}'?" if near else "an IANA name such as Asia/Shanghai"
    raise ConfigError(f"{cfg.where('bot.timezone')}: bot.timezone {tz!r} is not a known time zone (hint: {hint})")


def _validate_templates(cfg: Config) -> None:
    """``templates:`` keys are push purposes; a 订阅通知 template must not share the template message's id."""
    from storage.outbox import PURPOSES

    for purpose, spec in cfg.templates.items():
        if purpose not in PURPOSES:
            near = difflib.get_close_matches(purpose, PURPOSES, n=1, cutoff=0.5)
            hint = f"did you mean '{near[0]}'?" if near else f"push purposes: {', '.join(PURPOSES)}"
            raise ConfigError(f"{cfg.where('templates.' + purpose)}: templates.{purpose}: not a push purpose ({hint})")
        sub = spec.subscribe
        if sub is not None and sub.template_id and sub.template_id == spec.template_id:
            raise ConfigError(f"{cfg.where('templates.' + purpose)}: templates.{purpose}.subscribe.template_id is the "
                              "template message's id; "
                              "订阅通知 templates have their own ids (公众号 → 订阅通知 → 我的模板)")
