"""The incident state machine: the standard stages plus return, rework, extension, suspension and void."""

from geo.errors import IllegalTransition

OPEN = ("unassigned", "reported", "filed", "dispatched", "in_progress", "handled", "verified", "returned",
        "suspended")
FINAL = ("closed", "rejected", "void")
# Work still to do: these run late (overdue, escalation). Handled/verified wait on checking; suspended is paused.
PENDING = ("unassigned", "reported", "filed", "dispatched", "in_progress", "returned")

# action: (statuses it may start from, resulting status; None keeps the status or restores a saved one)
ACTIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "file": (("reported",), "filed"),                            # 案卷建立
    "dispatch": (("filed", "returned"), "dispatched"),           # 任务派遣
    "start": (("dispatched",), "in_progress"),                   # 任务处理
    "return": (("dispatched", "in_progress"), "returned"),       # 回退: not ours, back to the dispatcher
    "handle": (("in_progress",), "handled"),                     # 处理反馈
    "verify": (("handled",), "verified"),                        # 核查: fixed
    "rework": (("handled",), "dispatched"),                      # 返工: verified not fixed
    "close": (("verified",), "closed"),                          # 结案
    "reject": (("reported", "filed"), "rejected"),               # 不予受理
    "void": (("unassigned", "reported", "filed"), "void"),       # 作废
    "suspend": (("filed", "dispatched", "in_progress"), "suspended"),  # 挂账
    "resume": (("suspended",), None),                            # back to where it was suspended
    "extend": (("filed", "dispatched", "in_progress", "returned"), None),  # 延期: new due time
}
NEEDS_REASON = {"return", "rework", "reject", "void", "suspend", "extend"}

# Who may act: grid workers only on their own incidents, and only the field steps.
FIELD_ACTIONS = {"start", "return", "handle"}
STAFF_ROLES = ("supervisor", "dispatcher")


def allowed_actions(status: str) -> list[str]:
    """The actions allowed from a status."""
    return [action for action, (sources, _) in ACTIONS.items() if status in sources]


def next_status(incident_id: int, status: str, action: str, suspended_from: str | None = None) -> str:
    """The status after `action`, or IllegalTransition naming the allowed actions."""
    if action not in ACTIONS or status not in ACTIONS[action][0]:
        raise IllegalTransition(incident_id, status, action, allowed_actions(status))
    target = ACTIONS[action][1]
    if action == "resume":
        return suspended_from or "filed"
    return target or status
