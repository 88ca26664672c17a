"""Voice messages in a turn: counted for the staff figures; without text, a kind hint once a day.

A voice message reaches the turn either as text (WeChat's ``Recognition``, or our recogniser in
:mod:`bot.voice`: ``inbound.extra["voice"]`` is ``"wechat"`` / ``"webhook"``), or as a voice without text
(no recogniser configured, or it gave nothing: ``"failed"``). Every one is counted in ``voice_counts``
(:mod:`storage.voice`) in the turn's transaction; one without text gets a hint that typing or the
menu is needed, at most once a local day per person (``voice_hints``), then silence: repeating the
same hint to someone who keeps speaking helps nobody.
"""

from __future__ import annotations

from flows.api import Context, to_local
from storage.voice import count_voice, take_hint

HINT = ("抱歉，语音消息我暂时还听不懂。请直接打字提问，或点下方菜单选择要办的事。"
        "回复“帮助”查看全部功能，回复“人工”给工作人员留言。")


async def voice_turn(ctx: Context) -> bool:
    """Count a voice message; True when the turn is done (no text came out of it)."""
    how = ctx.inbound.extra.get("voice")
    outcome = how if how in ("wechat", "webhook", "failed") else "off"
    day = to_local(ctx.now, ctx.config.bot.timezone).date()
    await count_voice(ctx.session, day, outcome)
    if ctx.inbound.kind == "text" and ctx.text:
        return False  # recognised: the text is routed like any typed message
    if await take_hint(ctx.session, ctx.openid, day):
        ctx.say(HINT)
    return True
