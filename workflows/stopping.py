"""Stopping a workspace's instances from workflow code: one attempt at a time on workflow timers, so
every attempt is visible in the history and the backoff is a timer the test server can skip.

Two intents share the one stop-with-backoff loop: `stop_bounded` (restart, pause, hibernate, the
rescue reap: three attempts, then a reaper keeps at it while the workspace moves on) and
`stop_until_gone` (delete: never gives up, reports its progress). What follows a confirmed stop
lives here too: removing volumes and chat files, and waking the reapers of old instances."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

from workflows.calls import failure_type

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain.contract import ActivityErrorType, Signal
    from domain.events import EventType
    from domain.failures import STOP_FAILED, VOLUMES_FOREIGN
    from domain.models import FilesRequest, ReapRequest, StopRequest, TeardownState, VolumesRequest
    from domain.teardown import LEAK_SUSPECT_AFTER, RESTART_STOP_ATTEMPTS, stop_backoff

_ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
_FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=[ActivityErrorType.FOREIGN_RESOURCE],
)
_STOP_TIMEOUT = timedelta(seconds=90)
# These activities heartbeat while they work: one whose worker was killed is retried after this,
# not after its whole start-to-close timeout.
_HEARTBEAT = timedelta(seconds=10)
# About nine minutes of attempts at deleting the chat files before they are kept, with an event.
_FILES_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60), maximum_attempts=15
)

EventWriter = Callable[[EventType, dict[str, Any]], Awaitable[None]]


class StopOutcome(StrEnum):
    STOPPED = "stopped"
    HANDED_TO_REAPER = "handed_to_reaper"


async def stop_once(req: StopRequest) -> bool:
    """One attempt at stopping every instance `req` covers, confirmed gone. False on failure."""
    try:
        await workflow.execute_activity(
            contract.stop_instances,
            req,
            start_to_close_timeout=_STOP_TIMEOUT,
            heartbeat_timeout=_HEARTBEAT,
            retry_policy=_ONE_ATTEMPT,
        )
        return True
    except ActivityError as err:
        # The activity logs the backend's own words; workflow history and events get the class only.
        workflow.logger.warning("stop of workspace %s failed (%s)", req.workspace_id, failure_type(err))
        return False


class Stopper:
    """Stops one workspace's instances on behalf of its workflow, flagging a leak suspect (event +
    search attribute) after the third failure and clearing it once the instances are gone."""

    def __init__(
        self,
        workspace_id: str,
        backend: str,
        record_event: EventWriter,
        on_leak_change: Callable[[bool], None],
    ) -> None:
        self.workspace_id = workspace_id
        self.backend = backend
        self._record_event = record_event
        self._on_leak_change = on_leak_change

    def _request(self, instance_id: str | None, below_generation: int | None) -> StopRequest:
        return StopRequest(self.workspace_id, self.backend, instance_id, below_generation)

    async def stop_bounded(self, instance_id: str | None, generation: int, reaper_id: str) -> StopOutcome:
        """Three attempts; then a reaper workflow keeps stopping everything older than `generation`
        until it is gone, and the workspace moves on."""
        req = self._request(instance_id, generation)
        attempts = 0
        while not await stop_once(req):
            attempts += 1
            if attempts == LEAK_SUSPECT_AFTER:
                await self._suspect(instance_id, attempts)
            if attempts >= RESTART_STOP_ATTEMPTS:
                await workflow.start_child_workflow(
                    contract.REAPER_WORKFLOW,
                    ReapRequest(
                        self.workspace_id, self.backend, instance_id, workflow.info().workflow_id, generation
                    ),
                    id=reaper_id,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
                return StopOutcome.HANDED_TO_REAPER
            await workflow.sleep(stop_backoff(attempts))
        if attempts >= LEAK_SUSPECT_AFTER:
            await self.cleared(instance_id, attempts)
        return StopOutcome.STOPPED

    async def stop_until_gone(
        self,
        instance_id: str | None,
        teardown: TeardownState,
        after_failure: Callable[[bool], Awaitable[None]],
    ) -> None:
        """Never gives up: capped backoff, progress in `teardown`, `after_failure(first_suspect)` after
        each failed attempt (the workflow reports progress and may continue-as-new there)."""
        req = self._request(instance_id, None)
        while not await stop_once(req):
            teardown.attempts += 1
            teardown.last_error = STOP_FAILED
            first_suspect = teardown.attempts == LEAK_SUSPECT_AFTER
            if first_suspect:
                await self._suspect(instance_id, teardown.attempts)
            await after_failure(first_suspect)
            await workflow.sleep(stop_backoff(teardown.attempts))
        if teardown.leak_suspect:
            await self.cleared(instance_id, teardown.attempts)

    async def _suspect(self, instance_id: str | None, attempts: int) -> None:
        self._on_leak_change(True)
        await self._record_event(
            EventType.WORKSPACE_LEAK_SUSPECT,
            {
                "workspace_id": self.workspace_id,
                "instance_id": instance_id,
                "attempts": attempts,
                "last_error": STOP_FAILED,
            },
        )

    async def cleared(self, instance_id: str | None, attempts: int = 0) -> None:
        self._on_leak_change(False)
        await self._record_event(
            EventType.WORKSPACE_LEAK_CLEARED, {"instance_id": instance_id, "attempts": attempts + 1}
        )

    async def remove_volumes(self) -> bool:
        """Retried until done; False (and an event) when the volumes belong to another platform."""
        try:
            await workflow.execute_activity(
                contract.remove_volumes,
                VolumesRequest(self.workspace_id, self.backend),
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=_HEARTBEAT,
                retry_policy=_FOREVER,
            )
            return True
        except ActivityError as err:
            if failure_type(err) != ActivityErrorType.FOREIGN_RESOURCE:
                raise
            await self._record_event(
                EventType.WORKSPACE_VOLUMES_KEPT,
                {"workspace_id": self.workspace_id, "reason": VOLUMES_FOREIGN},
            )
            return False

    async def remove_files(self) -> None:
        """The chat files, once teardown completed (an upload racing the delete is refused by its row
        insert). Bounded: a file store that stays down keeps them, with an event, and the teardown
        still completes."""
        try:
            await workflow.execute_activity(
                contract.remove_files,
                FilesRequest(self.workspace_id),
                start_to_close_timeout=timedelta(seconds=120),
                heartbeat_timeout=_HEARTBEAT,
                retry_policy=_FILES_RETRY,
            )
        except ActivityError:
            await self._record_event(
                EventType.WORKSPACE_FILES_KEPT, {"reason": "the file store did not answer"}
            )

    async def wake_reapers(self, reapers: list[str]) -> None:
        """Teardown confirmed every instance gone: a reaper waiting out its backoff can finish now."""
        for reaper_id in reapers:
            try:
                await workflow.get_external_workflow_handle(reaper_id).signal(Signal.RETRY_NOW)
            except Exception:
                workflow.logger.info("reaper %s already finished", reaper_id)
        reapers.clear()
