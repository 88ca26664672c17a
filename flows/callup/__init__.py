"""应急集结: volunteer teams, member binding, call-ups with per-skill quorum and frozen escalation chains.

Modules: :mod:`.service` (operations shared by chat, web page, CLI and tick), :mod:`.member` (绑定,
我的队伍, 请假/恢复, answering), :mod:`.staff` (发起集结, 集结状态, 结束集结), :mod:`.escalation`
(the @tick), :mod:`.roster` (CSV roster validation), :mod:`.binding` (confirmed, rate-limited binding) and
:mod:`.review` (绑定审核), :mod:`.steps` (typed escalation steps), :mod:`.sms` (answers by SMS), :mod:`.parse`,
:mod:`.texts`.
"""

from flows.callup import escalation, member, review, staff  # noqa: F401 - register flows, ticks and scene handler
