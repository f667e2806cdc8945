"""Which recorded stream is the customer and which the agent, and who the call is, from the metadata.

The agent is the participant whose AOR matches `agent_aor_pattern` (when set, and when exactly one
stream's sender matches); otherwise `agent_side` says which stream, first or second in m-line order.
A single stream (a mixed recording) is the customer's: that is the voice the detector reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callguard.core.events import Role
from callguard.core.facts import CallFacts
from callguard.sources.telephony.siprec.metadata import Metadata, Participant


@dataclass(frozen=True)
class StreamPlan:
    """An accepted m-line: its place in the offer and its label."""

    index: int
    label: str


@dataclass(frozen=True)
class CallPlan:
    roles: dict[int, Role]  # m-line index -> role
    facts: CallFacts
    agent_id: str
    extra: dict[str, str]
    reason: str  # how the roles were decided, for the log line


def plan_call(
    streams: list[StreamPlan],
    meta: Metadata | None,
    sip_call_id: str,
    *,
    agent_side: str,
    agent_pattern: re.Pattern[str] | None,
    keep: dict[int, Role] | None = None,
) -> CallPlan:
    """Roles and facts; with `keep` (a re-INVITE's new metadata) the roles stay, only the facts are new."""
    if not 1 <= len(streams) <= 2:
        raise ValueError(f"a recording plan needs one or two streams, got {len(streams)}")
    senders: dict[int, Participant | None] = {
        s.index: (meta.sender_of_label(s.label) if meta is not None and s.label else None) for s in streams
    }
    roles: dict[int, Role]
    if keep is not None:
        roles = {s.index: keep[s.index] for s in streams if s.index in keep}
        reason = "roles kept from the call's start"
    elif len(streams) == 1:
        roles = {streams[0].index: "customer"}
        reason = "one stream (mixed): customer"
    else:
        first, second = streams
        matched = [
            s.index
            for s in streams
            if agent_pattern is not None
            and (sender := senders[s.index]) is not None
            and agent_pattern.search(sender.aor)
        ]
        if len(matched) == 1:
            agent = matched[0]
            sender = senders[agent]
            reason = f"agent by AOR {sender.aor if sender is not None else ''}"
        else:
            agent = (first if agent_side == "first" else second).index
            if meta is None:
                why = "no metadata"
            elif agent_pattern is None:
                why = "no agent_aor_pattern"
            else:
                why = f"{len(matched)} AORs match agent_aor_pattern"
            reason = f"agent is the {agent_side} stream ({why})"
        roles = {s.index: ("agent" if s.index == agent else "customer") for s in streams}
    by_role: dict[Role, Participant | None] = {role: senders[index] for index, role in roles.items()}
    agent_p = by_role.get("agent")
    customer_p = by_role.get("customer")
    call_ids = (meta.call_ids + meta.session_ids) if meta is not None else []
    facts = CallFacts(
        call_id=call_ids[0] if call_ids else sip_call_id,
        customer_name=customer_p.name if customer_p is not None else "",
        agent_name=agent_p.name if agent_p is not None else "",
    )
    extra = {"sip_call_id": sip_call_id, "roles": reason}
    for role, participant in by_role.items():
        if participant is not None:
            extra[f"{role}_aor"] = participant.aor
            if participant.name:
                extra[f"{role}_name"] = participant.name
    if meta is not None:
        listed = {p.aor for p in by_role.values() if p is not None}
        others = [p.aor for p in meta.participants.values() if p.aor and p.aor not in listed]
        if others:
            extra["other_aors"] = ", ".join(others)
        if call_ids:
            extra["metadata_call_ids"] = ", ".join(dict.fromkeys(call_ids))
    return CallPlan(roles, facts, agent_p.user if agent_p is not None else "", extra, reason)
