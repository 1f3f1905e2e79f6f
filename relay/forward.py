"""Forward one A2A call to its target, or queue it when the target is busy: the logic the API proxy,
a delegation and the queue drain share. Access is decided before this (the caller may reach the
target); this decides what the target's state and answer make of the call."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import asyncpg

from domain.a2a import (
    LOGGED_BODY_BYTES,
    QUEUE_PRIORITY,
    A2ARequest,
    Refusal,
    bounded_json,
    busy_native_session,
    busy_not_queued,
    declares_native_session,
    preview,
    rpc_error,
    target_refusal,
)
from domain.redaction import Redactor, redact_json
from domain.ssrf import runs_beside_platform
from relay.dispatch import Deadline, Delivery, Dispatcher, Outcome
from store import a2a as a2a_store
from store.a2a import CallRecord, Enqueued, Party

log = logging.getLogger("molecule.a2a")
# Known secret shapes only: the proxy has no workspace's secret values at hand.
_REDACTOR = Redactor()
ERROR_CHARS = 500
METHOD_CHARS = 100
Watch = Callable[[str, Callable[[], None]], Callable[[], None]]


@dataclass(frozen=True)
class ForwardConfig:
    idle_timeout_seconds: int
    ceiling_seconds: int
    queue_ttl_seconds: int
    docker_network: str = "host"


@dataclass
class Forwarded:
    """Exactly one of: the agent's answer, the queue entry, the inbox row (a poll-mode agent, whose
    log is already written), or the refusal."""

    record: CallRecord
    delivery: Delivery | None = None
    queued: Enqueued | None = None
    refusal: Refusal | None = None
    inboxed: str | None = None


class Forwarder:
    def __init__(
        self, pool: asyncpg.Pool, dispatcher: Dispatcher, watch: Watch | None, config: ForwardConfig
    ):
        self.pool = pool
        self.dispatcher = dispatcher
        self.watch = watch
        self.config = config

    def deadline(self, target: Party) -> Deadline:
        idle = target.idle_timeout_seconds or self.config.idle_timeout_seconds
        # Every call ends at the ceiling whatever the events: an agent that still heartbeats but never
        # answers holds no call (nor its connection) for longer.
        return Deadline(float(idle), float(self.config.ceiling_seconds))

    async def deliver(
        self, caller_id: str | None, target: Party, request: A2ARequest
    ) -> tuple[Delivery, int]:
        """Send without queueing; (the delivery, its duration in ms)."""
        watch = self.watch
        started = time.monotonic()
        headers = {"X-Workspace-ID": caller_id} if caller_id else {}
        delivery = await self.dispatcher.send(
            str(target.url),
            json.dumps(request.body).encode(),
            headers,
            self.deadline(target),
            (lambda touch: watch(target.id, touch)) if watch is not None else None,
            local_agent=runs_beside_platform(target.backend, self.config.docker_network),
        )
        return delivery, int((time.monotonic() - started) * 1000)

    async def forward(
        self,
        caller_id: str | None,
        target: Party,
        request: A2ARequest,
        *,
        delegation_id: str | None = None,
    ) -> Forwarded:
        poll = target.delivery_mode == "poll"
        refusal = target_refusal(target.status, target.url, target.removed, poll=poll)
        if refusal is not None:
            return Forwarded(call_record(caller_id, target, request, 0, refusal=refusal), refusal=refusal)
        if poll:
            # Its inbox is the delivery: written now, not after the reply (unlike the other logs), with
            # the message as sent (like a queued one: the agent must read what was asked), so within
            # the log's bound or refused.
            if len(json.dumps(request.body)) > LOGGED_BODY_BYTES:
                refusal = Refusal(
                    413,
                    "message_too_large",
                    f"a poll-mode agent's messages are at most {LOGGED_BODY_BYTES} bytes",
                )
                return Forwarded(call_record(caller_id, target, request, 0, refusal=refusal), refusal=refusal)
            record = call_record(caller_id, target, request, 0, inboxed=True)
            stored = replace(redacted(record), request_body=request.body)
            try:
                activity_id = await a2a_store.log_call(self.pool, stored)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "workspace %s: could not write to a poll agent's inbox (%s)",
                    target.id,
                    type(exc).__name__,
                )
                refusal = busy_not_queued()
                return Forwarded(call_record(caller_id, target, request, 0, refusal=refusal), refusal=refusal)
            return Forwarded(record, inboxed=activity_id)
        delivery, duration_ms = await self.deliver(caller_id, target, request)
        if delivery.outcome != Outcome.BUSY:
            return Forwarded(
                call_record(caller_id, target, request, duration_ms, delivery=delivery), delivery
            )
        if declares_native_session(target.capabilities):
            refusal = busy_native_session()
            return Forwarded(
                call_record(caller_id, target, request, duration_ms, delivery=delivery, refusal=refusal),
                refusal=refusal,
            )
        try:
            queued = await a2a_store.enqueue(
                self.pool,
                workspace_id=target.id,
                caller_id=caller_id,
                method=request.method,
                body=request.body,
                idempotency_key=request.message_id,
                priority=QUEUE_PRIORITY,
                ttl_seconds=self.config.queue_ttl_seconds,
                delegation_id=delegation_id,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning(
                "workspace %s: could not queue a call for a busy agent (%s)", target.id, type(exc).__name__
            )
            refusal = busy_not_queued()
            return Forwarded(
                call_record(caller_id, target, request, duration_ms, delivery=delivery, refusal=refusal),
                refusal=refusal,
            )
        record = call_record(caller_id, target, request, duration_ms, delivery=delivery, queued=queued)
        return Forwarded(record, queued=queued)


def call_record(
    caller_id: str | None,
    target: Party,
    request: A2ARequest,
    duration_ms: int,
    delivery: Delivery | None = None,
    refusal: Refusal | None = None,
    queued: Enqueued | None = None,
    inboxed: bool = False,
) -> CallRecord:
    """The log row of a call: what was asked, what came back, and how it ended (the error detail is
    the platform's own words, never the agent's address). Raw: `write_log` bounds and redacts it."""
    response = delivery.parsed() if delivery is not None and delivery.outcome == Outcome.DELIVERED else None
    status, error, http_status = "ok", None, 200
    if inboxed:
        http_status = 202
    elif queued is not None:
        status, error, http_status = (
            "error",
            f"agent busy ({delivery.detail if delivery else ''}); queued",
            202,
        )
        if delivery is not None and "idle timeout" in delivery.detail:
            status = "timeout"
    elif refusal is not None:
        status, error, http_status = "error", refusal.message, refusal.http_status
    elif delivery is not None and delivery.outcome != Outcome.DELIVERED:
        status, error, http_status = "error", delivery.detail, 502
    elif delivery is not None:
        http_status = delivery.status_code
        failed = delivery.status_code >= 400
        error = f"agent answered HTTP {delivery.status_code}" if failed else rpc_error(response)
        status = "error" if error else "ok"
    # Bounded: an agent's error text can be a whole traceback, and the event rides a NOTIFY.
    error = preview(error, ERROR_CHARS) if error else None
    method = preview(request.method, METHOD_CHARS)
    verb = f"{method} → {target.name}"
    return CallRecord(
        source_id=caller_id,
        target_id=target.id,
        method=method,
        summary=preview(verb if status == "ok" else f"{verb} failed: {error}"),
        request_body=request.body,
        response_body=response,
        duration_ms=duration_ms,
        status=status,
        error_detail=error,
        http_status=http_status,
        queued=queued is not None,
        queue_id=queued.queue_id if queued else None,
        inboxed=inboxed,
    )


def redacted(record: CallRecord) -> CallRecord:
    """The record as it may be stored: bodies bounded to 64 KiB and every string redacted."""
    return replace(
        record,
        summary=_REDACTOR.redact(record.summary),
        request_body=redact_json(bounded_json(record.request_body), _REDACTOR),
        response_body=(
            redact_json(bounded_json(record.response_body), _REDACTOR)
            if record.response_body is not None
            else None
        ),
        error_detail=_REDACTOR.redact(record.error_detail) if record.error_detail else None,
    )


async def write_log(pool: asyncpg.Pool, record: CallRecord) -> None:
    """Redact, then write the call's log rows and event (callers run it after their reply). Best
    effort: a log that cannot be written never fails, or repeats, the call it records. A poll-mode
    agent's call was logged by `forward` already (the row is its inbox)."""
    if record.inboxed:
        return
    try:
        await a2a_store.log_call(pool, redacted(record))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("workspace %s: could not log an A2A call (%s)", record.target_id, type(exc).__name__)
