"""The one writer of a workspace's status (and of its evidence events), used by its workflow.

Writes are serialised, each with the workflow's next transition sequence number (the store refuses
one that is not newer than the row's), so the row always ends as the workflow's status, however many
of the workflow's coroutines (the main loop, a start, an update handler) write at once."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

from workflows.calls import local, store

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain import search_attributes as sa
    from domain.events import EventType
    from domain.lifecycle import Timer, arms_on_entry, rearm
    from domain.models import EventRecord, StatusChange, WorkspaceInput, WorkspaceState
    from domain.status import WorkspaceStatus


class StatusWriter:
    def __init__(self, inp: WorkspaceInput, state: WorkspaceState) -> None:
        self.inp = inp
        self.state = state
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def _key(self) -> str:
        self.state.transition_seq += 1
        return f"{workflow.info().workflow_id}:{self.state.transition_seq}"

    async def write(
        self,
        status: WorkspaceStatus,
        event_type: EventType,
        payload: dict[str, Any],
        *,
        last_sample_error: str | None = None,
        clear_sample_error: bool = False,
        quick: bool = False,
        from_statuses: tuple[WorkspaceStatus, ...] | None = None,
        generation: int | None = None,
    ) -> bool:
        """Write a status change and its event; False when it no longer applies: the workspace was
        removed, or the change was decided from a status another writer replaced meanwhile
        (`from_statuses`). `quick`: a local activity, one workflow task instead of an activity round
        trip, for the writes someone waits on (an update's reply, the deadline verdict)."""
        async with self._lock:
            state = self.state
            if state.teardown is not None and status != WorkspaceStatus.REMOVED:
                return False  # removed is final; the store refuses it too
            if from_statuses is not None and state.status not in from_statuses:
                return False
            key = self._key()
            change = StatusChange(
                self.inp.workspace_id, status.value, event_type.value, payload, key, state.transition_seq,
                last_sample_error, clear_sample_error, generation,
            )  # fmt: skip
            self._rearm(status)
            state.status, state.status_seq = status, state.transition_seq
            workflow.upsert_search_attributes([sa.WORKSPACE_STATUS.value_set(status.value)])
            await (local if quick else store)(contract.record_status, change)
            return True

    def _rearm(self, status: WorkspaceStatus) -> None:
        now, state = workflow.now().timestamp(), self.state
        if Timer.LIVENESS in arms_on_entry(state.status, status):
            state.last_beat_at = max(state.last_beat_at or 0.0, now)  # live from now on
        idle_after = self.inp.hibernation_idle_minutes * 60.0 or None
        state.due = rearm(
            state.due, state.status, status, now,
            stale_after=state.stale_after_secs, idle_after=idle_after, rescue_grace=state.rescue_grace_secs,
        )  # fmt: skip

    async def event(self, event_type: EventType, payload: dict[str, Any]) -> None:
        """An event that is not a status change (evidence for operators), written once."""
        record = EventRecord(self.inp.workspace_id, event_type.value, payload, self._key())
        await store(contract.record_event, record)
