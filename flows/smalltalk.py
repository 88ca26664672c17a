"""闲聊: one short friendly reply to greetings, thanks, 好的/嗯, praise, complaints, 在吗, weather, bye.

Reached through the ``smalltalk_*`` intents (intents/smalltalk.yaml). It never asks the policy Q&A
(so small talk is never a knowledge gap) and never offers 人工 as a ticket; a complaint is told how to
reach a person in words. Where it helps the reply ends with the menu hint. The flow ends at once.
"""

from __future__ import annotations

from flows.api import Context, Flow, flow

MENU_HINT = "回复“帮助”查看能办理的事项，也可以直接打字问政策。"

#: The reply per small-talk intent (the part of the id after ``smalltalk_``).
REPLIES: dict[str, str] = {
    "greeting": "您好！我是退役军人服务小助手，很高兴为您服务。",
    "presence": "在的，您请讲。",
    "thanks": "不客气，能帮上忙就好！",
    "ack": "好的。有别的事随时找我。",
    "ask": "您请说，直接打字问就行，例如“优待证怎么办理”“退役金什么时候发”。",
    "praise": "谢谢您的鼓励，我们会继续努力！",
    "complaint": "抱歉没帮上忙。请换个说法再试试；想让工作人员回复，请发“人工”二字给我留言。",
    "bye": "再见，祝您身体健康！有事随时找我。",
    "laugh": "😊 有事随时找我。",
    "emoji": "收到您的心意，谢谢！",
    "weather": "天气我查不了，请看手机上的天气预报。出门注意冷暖。",
    "chitchat": "我是退役军人事务局的服务小助手，能办的事都在菜单里。",
}
#: Kinds whose reply ends with the menu hint (a greeting or a question about us invites the next step).
WITH_HINT = frozenset({"greeting", "presence", "weather", "chitchat", "complaint"})


def reply_for(intent_id: str) -> str:
    """The reply for the small-talk intent ``intent_id`` (unknown kinds: the greeting)."""
    kind = intent_id.removeprefix("smalltalk_")
    text = REPLIES.get(kind, REPLIES["greeting"])
    if kind in WITH_HINT and "人工" not in text:
        text = f"{text}\n{MENU_HINT}"
    return text


@flow
class SmallTalk(Flow):
    name = "smalltalk"
    title = "闲聊"

    async def start(self, ctx: Context) -> None:
        ctx.say(reply_for(ctx.intent_id or "smalltalk_greeting"))
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - the flow ends at once
        ctx.reroute()
