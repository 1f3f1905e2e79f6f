"""Agent-to-agent side effects the workflows call: draining a workspace's busy queue, and sending and
finishing delegations. Bodies and answers stay in Postgres; workflows see ids and outcomes only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.client import Client

from domain import contract
from domain.a2a import (
    AGENT_CALL_CEILING_SECONDS,
    A2ARequest,
    InvalidA2ARequest,
    message_send,
    normalise,
    preview,
    response_text,
    rpc_error,
)
from domain.access import Node, can_communicate
from domain.contract import Signal, Update, implements
from domain.models import (
    ActionResult,
    DelegationFinish,
    DelegationInput,
    DelegationOutcome,
    DelegationStatus,
    DrainReport,
    DrainRequest,
    QueuedDelivery,
    workflow_id_for,
)
from domain.redaction import Redactor
from relay.dispatch import Outcome
from relay.forward import Forwarder, call_record, write_log
from store import a2a as a2a_store
from store import delegations as delegation_store
from store.a2a import QueueEntry

log = logging.getLogger("molecule.activities.a2a")
_REDACTOR = Redactor()


def reason(text: str) -> str:
    """An agent's words as a reason the workflow carries: short and redacted (its history keeps it)."""
    return preview(_REDACTOR.redact(text), 300)


_HEARTBEAT_EVERY = 5.0
# A drained entry left dispatched by a drain that vanished is taken again after this long.
_LEASE_SECONDS = AGENT_CALL_CEILING_SECONDS + 300


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a long dispatch waits for an agent: a dead worker is noticed in seconds."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(_HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class A2AActivities:
    def __init__(self, pool: asyncpg.Pool, forwarder: Forwarder, client: Client) -> None:
        self.pool = pool
        self.forwarder = forwarder
        self.client = client

    def all(self) -> list[Callable[..., Any]]:
        return [self.drain_queue, self.dispatch_delegation, self.finish_delegation]

    # --- the busy queue -------------------------------------------------------------------------

    @implements(contract.drain_queue)
    async def drain_queue(self, req: DrainRequest) -> DrainReport:
        report = DrainReport()
        target = await a2a_store.party(self.pool, req.workspace_id)
        if target is None or target.removed or target.status.value not in ("online", "degraded"):
            return report
        info = activity.info()
        claimant = f"{info.workflow_id}/{info.activity_id}"
        entries = await a2a_store.claim(
            self.pool, req.workspace_id, max(1, req.capacity), claimant, _LEASE_SECONDS
        )
        report.dispatched = len(entries)
        async with _heartbeating():
            results = await asyncio.gather(
                *(self._deliver_entry(target, entry) for entry in entries), return_exceptions=True
            )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                # This entry only: back to the queue (its claim is retried by the next drain).
                log.warning(
                    "workspace %s: queue entry %s not settled (%s)",
                    req.workspace_id,
                    entry.id,
                    type(result).__name__,
                )
                await a2a_store.retry_later(self.pool, entry.id, "the drain failed while sending it")
                report.requeued += 1
                continue
            outcome, delivery = result
            if outcome == "completed":
                report.completed += 1
            elif outcome == "failed":
                report.failed += 1
            else:
                report.requeued += 1
            if delivery is not None:
                report.deliveries.append(delivery)
        report.remaining = (await a2a_store.queue_counts(self.pool, req.workspace_id)).get("queued", 0)
        return report

    async def _deliver_entry(
        self, target: a2a_store.Party, entry: QueueEntry
    ) -> tuple[str, QueuedDelivery | None]:
        message = (
            entry.body.get("params", {}).get("message", {})
            if isinstance(entry.body.get("params"), dict)
            else {}
        )
        request = A2ARequest(
            entry.method, entry.body, message.get("messageId") if isinstance(message, dict) else None
        )
        delivery, duration_ms = await self.forwarder.deliver(entry.caller_id, target, request)
        try:
            await write_log(self.pool, call_record(entry.caller_id, target, request, duration_ms, delivery))
            if delivery.outcome == Outcome.DELIVERED and delivery.status_code < 400:
                answer = delivery.parsed(limit=None)
                await a2a_store.complete(self.pool, entry.id)
                if entry.delegation_id is None:
                    return "completed", None
                error = rpc_error(answer)
                if error is None:
                    await delegation_store.set_answer(
                        self.pool, entry.delegation_id, response_text(answer) or "", None
                    )
                told = QueuedDelivery(entry.delegation_id, True, reason(error) if error else None)
                await self._tell(told)
                return "completed", told
            detail = delivery.detail or f"the agent answered HTTP {delivery.status_code}"
            failed = await a2a_store.retry_later(self.pool, entry.id, detail)
            if failed and entry.delegation_id is not None:
                told = QueuedDelivery(
                    entry.delegation_id, False, reason(f"not delivered after retries: {detail}")
                )
                await self._tell(told)
                return "failed", told
            return ("failed" if failed else "requeued"), None
        finally:
            delivery.close()

    # --- delegations ----------------------------------------------------------------------------

    @implements(contract.dispatch_delegation)
    async def dispatch_delegation(self, inp: DelegationInput) -> DelegationOutcome:
        row = await delegation_store.get_committed(self.pool, inp.delegation_id)
        if row is None:
            return DelegationOutcome(
                DelegationStatus.FAILED, "delegation not found (its request was rolled back)"
            )
        if row["status"] in delegation_store.TERMINAL:
            return DelegationOutcome(DelegationStatus(row["status"]), row["error"])
        source = await a2a_store.party(self.pool, inp.source_id)
        target = await a2a_store.party(self.pool, inp.target_id)
        if source is None or target is None or source.removed:
            return DelegationOutcome(
                DelegationStatus.FAILED, "the source or the target workspace does not exist"
            )
        if not can_communicate(Node(source.id, source.parent_id), Node(target.id, target.parent_id)):
            return DelegationOutcome(
                DelegationStatus.FAILED, "access denied: these workspaces may not communicate"
            )
        await delegation_store.set_status(self.pool, inp.delegation_id, DelegationStatus.DISPATCHED)
        try:
            request = normalise(
                message_send(
                    row["task"],
                    inp.delegation_id,
                    {"delegation_id": inp.delegation_id, "source_workspace_id": inp.source_id},
                )
            )
        except InvalidA2ARequest as exc:  # an empty task is refused at the API; this is a guard
            return DelegationOutcome(DelegationStatus.FAILED, str(exc))
        async with _heartbeating():
            result = await self.forwarder.forward(
                inp.source_id, target, request, delegation_id=inp.delegation_id
            )
        await write_log(self.pool, result.record)
        if result.queued is not None or result.inboxed is not None:
            return DelegationOutcome(DelegationStatus.QUEUED)
        if result.refusal is not None:
            if result.refusal.wake:
                await self._wake(target.id)
            if result.refusal.retry_after is not None:
                # Waking, starting up, or busy with a session of its own: tried again until the
                # delegation's deadline.
                return DelegationOutcome(
                    DelegationStatus.PENDING, result.refusal.message, retry_after=result.refusal.retry_after
                )
            return DelegationOutcome(DelegationStatus.FAILED, result.refusal.message)
        delivery = result.delivery
        assert delivery is not None
        try:
            if delivery.outcome != Outcome.DELIVERED:
                return DelegationOutcome(DelegationStatus.FAILED, reason(delivery.detail))
            if delivery.status_code >= 400:
                return DelegationOutcome(
                    DelegationStatus.FAILED, f"the target answered HTTP {delivery.status_code}"
                )
            answer = delivery.parsed(limit=None)
            error = rpc_error(answer)
            if error is not None:
                return DelegationOutcome(
                    DelegationStatus.FAILED, f"the target answered an error: {reason(error)}"
                )
            await delegation_store.set_answer(self.pool, inp.delegation_id, response_text(answer) or "", None)
            return DelegationOutcome(DelegationStatus.COMPLETED)
        finally:
            delivery.close()

    async def _tell(self, delivery: QueuedDelivery) -> None:
        """Tell the delegation at once, so an answer is never lost to a drain that dies before it
        returns (the workspace workflow tells it again from the report; a second word is a no-op)."""
        try:
            handle = self.client.get_workflow_handle(contract.delegation_workflow_id(delivery.delegation_id))
            await handle.signal(Signal.DELEGATION_DELIVERED, delivery)
        except Exception as exc:  # ended already (timed out), or Temporal is away: the report retries
            log.info("delegation %s not told (%s)", delivery.delegation_id, type(exc).__name__)

    async def _wake(self, workspace_id: str) -> None:
        try:
            handle = self.client.get_workflow_handle(workflow_id_for(workspace_id))
            await handle.execute_update(Update.RESUME, result_type=ActionResult)
        except Exception as exc:  # already waking, or refused: the delegation retries either way
            log.info("workspace %s: wake for a delegation not applied (%s)", workspace_id, type(exc).__name__)

    @implements(contract.finish_delegation)
    async def finish_delegation(self, finish: DelegationFinish) -> None:
        status, error = finish.status, finish.error
        if status == DelegationStatus.FAILED and await delegation_store.has_answer(
            self.pool, finish.delegation_id
        ):
            status, error = DelegationStatus.COMPLETED, None  # its answer arrived; the word of it did not
        await delegation_store.set_status(self.pool, finish.delegation_id, status, error)
        if status in (DelegationStatus.COMPLETED, DelegationStatus.FAILED):
            # Ended either way: a copy still queued is never delivered after it.
            await a2a_store.drop_for_delegation(self.pool, finish.delegation_id)
