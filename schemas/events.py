"""Event contracts: one pydantic model per input topic.

Every event carries ``event_id`` (the idempotency key: a re-delivery of the same event keeps it)
and ``ts`` (event time, timezone-aware, normalised to UTC; naive timestamps are rejected).
Models are strict (no silent coercion of ``"5"`` to ``5``) and forbid unknown fields, so a
typo in an integration fails loudly instead of producing a wrong KPI. ``schema_version``
lets the contract evolve: a consumer rejects versions it does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1

Id = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-/ ]+$")]
Seconds = Annotated[float, Field(ge=0, le=7 * 86_400)]


class Channel(StrEnum):
    phone = "phone"
    chat = "chat"
    email = "email"
    social = "social"
    video = "video"


class Direction(StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class CallEventKind(StrEnum):
    """A contact's life in one queue visit (a "leg")."""

    offered = "offered"  # entered the queue
    answered = "answered"  # an agent connected; carries wait_seconds
    abandoned = "abandoned"  # the customer left the queue; carries wait_seconds
    transferred = "transferred"  # the agent transferred the contact out
    hold_started = "hold_started"
    hold_ended = "hold_ended"
    ring_no_answer = "ring_no_answer"  # routed to agent_id, not answered (RONA)
    ended = "ended"  # handling finished; carries talk/hold/acw seconds


class TicketEventKind(StrEnum):
    created = "created"
    first_response = "first_response"
    status_changed = "status_changed"
    resolved = "resolved"
    reopened = "reopened"
    closed = "closed"


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class AgentState(StrEnum):
    logged_in = "logged_in"
    ready = "ready"
    not_ready = "not_ready"
    busy = "busy"
    after_call_work = "after_call_work"
    logged_out = "logged_out"


#: Event times before this are rejected. The default values of unset clocks and missing times
#: (year 1, 1900, epoch 0 in 1970, DOS and GPS in 1980) all precede it, and one of them opening a
#: partition's stream time would have every minute since closed, zero-filled and emitted
#: (docs/events.md); real logs are later (the Technion bank data of 1999 in the shared tests).
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)


def _utc(v: datetime) -> datetime:
    """``v`` in UTC. An offset that carries it past year 1 or 9999 is a validation error: the
    bare ``OverflowError`` would escape pydantic and the decoder, and one such event would stop
    a worker."""
    try:
        return v.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_out_of_range", "Input is outside years 1-9999 in UTC") from None


class EventBase(BaseModel):
    """Fields every input event has."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, use_enum_values=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    ts: AwareDatetime

    @field_validator("ts")
    @classmethod
    def _ts_utc(cls, v: datetime) -> datetime:
        v = _utc(v)
        if v < EARLIEST_EVENT_TIME:
            raise PydanticCustomError(
                "datetime_too_early", "Input is before 1990-01-01T00:00:00Z: a clock unset or a missing time read as 0?"
            )
        return v


class CallEvent(EventBase):
    """Topic ``cc.calls``, key ``contact_id``. One queue visit of a contact.

    A queue-to-queue transfer ends this leg (``transferred``) and starts a new leg with a new
    ``contact_id`` whose ``parent_contact_id`` points back, as ACD exports do.
    """

    kind: CallEventKind
    contact_id: Id
    parent_contact_id: Id | None = None
    queue: Name
    channel: Channel
    business_type: Name = "default"
    direction: Direction = Direction.inbound
    agent_id: Id | None = None
    customer_id: Id | None = None  # personal data: pseudonymised before any sink
    caller_number: Annotated[str, Field(max_length=32)] | None = None  # personal data
    wait_seconds: Seconds | None = None
    ring_seconds: Seconds | None = None
    talk_seconds: Seconds | None = None
    hold_seconds: Seconds | None = None
    acw_seconds: Seconds | None = None
    queue_position: Annotated[int, Field(ge=0)] | None = None
    transfer_target: Name | None = None
    hangup_by: Literal["customer", "agent", "system"] | None = None
    source_system: Name | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> CallEvent:
        k = self.kind
        if k in (CallEventKind.answered, CallEventKind.abandoned) and self.wait_seconds is None:
            raise ValueError(f"a {k.value} event needs wait_seconds (time in queue)")
        if k in (CallEventKind.answered, CallEventKind.ring_no_answer) and self.agent_id is None:
            raise ValueError(f"a {k.value} event needs agent_id")
        if k is CallEventKind.ended and self.talk_seconds is None:
            raise ValueError("an ended event needs talk_seconds")
        return self


class TicketEvent(EventBase):
    """Topic ``cc.tickets``, key ``ticket_id``. Every event repeats ``created_at`` and ``sla_due``
    so response and resolution times need no lookup."""

    kind: TicketEventKind
    ticket_id: Id
    created_at: AwareDatetime
    category: Name
    priority: Priority = Priority.normal
    sla_due: AwareDatetime | None = None
    channel: Channel
    team: Name
    business_type: Name = "default"
    agent_id: Id | None = None
    customer_id: Id | None = None  # personal data
    status: Name | None = None

    @field_validator("created_at", "sla_due")
    @classmethod
    def _times_utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    @model_validator(mode="after")
    def _order(self) -> TicketEvent:
        if self.created_at > self.ts:
            raise ValueError("created_at is after the event's ts")
        return self


class SurveyEvent(EventBase):
    """Topic ``cc.surveys``, key ``contact_id`` (or ``ticket_id`` when it rates a ticket), so a
    survey lands in the same partition as the contact it rates."""

    survey_id: Id
    contact_id: Id | None = None
    ticket_id: Id | None = None
    queue: Name | None = None
    channel: Channel | None = None
    business_type: Name | None = None
    agent_id: Id | None = None
    customer_id: Id | None = None  # personal data
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    ces: Annotated[int, Field(ge=1, le=7)] | None = None
    comment: Annotated[str, Field(max_length=4000)] | None = None  # free text: scrubbed before sinks

    @model_validator(mode="after")
    def _rates_something(self) -> SurveyEvent:
        if self.contact_id is None and self.ticket_id is None:
            raise ValueError("a survey rates a contact_id or a ticket_id")
        if self.csat is None and self.nps is None and self.ces is None:
            raise ValueError("a survey needs at least one of csat, nps, ces")
        return self

    @property
    def rated_id(self) -> str:
        return self.contact_id or self.ticket_id or ""


class AgentStateEvent(EventBase):
    """Topic ``cc.agents``, key ``agent_id``. The agent entered ``state`` at ``ts``."""

    agent_id: Id
    state: AgentState
    queues: list[Name] = Field(default_factory=list, max_length=64)
    reason: Annotated[str, Field(max_length=64)] | None = None  # not-ready (pause) reason
    channel: Channel | None = None

    @field_validator("queues")
    @classmethod
    def _queues_once(cls, v: list[str]) -> list[str]:
        """A queue listed twice is one skill: the agent counts once in its dimension (first listing
        kept, order otherwise unchanged), on every path that reads the event."""
        return v if len(set(v)) == len(v) else list(dict.fromkeys(v))


InputEvent = CallEvent | TicketEvent | SurveyEvent | AgentStateEvent

MODEL_BY_FAMILY: dict[str, type[EventBase]] = {
    "calls": CallEvent,
    "tickets": TicketEvent,
    "surveys": SurveyEvent,
    "agents": AgentStateEvent,
}


def entity_key(family: str, event: EventBase) -> str:
    """The Kafka record key producers must use, so an entity's events share a partition."""
    if family == "calls":
        return event.contact_id  # type: ignore[attr-defined]
    if family == "tickets":
        return event.ticket_id  # type: ignore[attr-defined]
    if family == "surveys":
        return event.rated_id  # type: ignore[attr-defined]
    return event.agent_id  # type: ignore[attr-defined]
