"""WorkspaceWorkflow: one durable workflow per workspace, the only writer of its status."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain import search_attributes as sa
    from domain.events import EventType
    from domain.models import (
        EventRecord,
        HeartbeatSignal,
        LivenessReport,
        LivenessRequest,
        ProvisionPlan,
        ProvisionRequest,
        RegisterSignal,
        StartRequest,
        StartResult,
        StatusChange,
        StopRequest,
        WorkspaceInput,
        WorkspaceState,
    )
    from domain.status import WorkspaceStatus
    from domain.timeouts import PROVISION_TIMEOUT_ERROR
    from domain.transitions import (
        LIVENESS_STATUSES,
        Transition,
        liveness_slack,
        on_heartbeat,
        on_register,
        on_stale,
    )

# Types the activities raise; kept as literals so this module does not import activity code.
WORKSPACE_NOT_FOUND = "WorkspaceNotFound"

_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# The row may not be committed yet when the first task runs; one that never appears means the
# create was rolled back. Waits are workflow timers (~1 minute in all), then the workflow gives up.
_FIND_ROW_WAITS = (0.5, 1, 2, 4, 8, 15, 30)
_START_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Restart stops the old instance with 3 attempts, 1 s / 2 s / 4 s apart.
_STOP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2, maximum_attempts=3)
_LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


@workflow.defn(name="WorkspaceWorkflow")
class WorkspaceWorkflow:
    def __init__(self) -> None:
        self.state = WorkspaceState(status=WorkspaceStatus.PROVISIONING.value)
        self.inbox: list[RegisterSignal | HeartbeatSignal] = []
        self._start_task: asyncio.Task[None] | None = None

    # --- messages -------------------------------------------------------------------------------
    # Handlers only enqueue: the main loop applies messages in order, so there is one place that
    # changes status, and continue-as-new never races a half-applied handler.

    @workflow.signal(name="register")
    def register(self, signal: RegisterSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name="heartbeat")
    def heartbeat(self, signal: HeartbeatSignal) -> None:
        self.inbox.append(signal)

    @workflow.query(name="state")
    def query_state(self) -> WorkspaceState:
        return self.state

    # --- main loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: WorkspaceInput) -> str:
        self.inp = inp
        if inp.state is not None:
            self.state = inp.state
        elif inp.backend == "external":
            self.state = WorkspaceState(status=WorkspaceStatus.AWAITING_AGENT.value)

        if not self.state.provisioned:
            if not await self._provision():
                return "abandoned: workspace row never appeared"

        while True:
            if self._continue_as_new_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self.inbox:
                    workflow.continue_as_new(replace(inp, state=self.state))
            try:
                await workflow.wait_condition(
                    lambda: bool(self.inbox) or self._continue_as_new_due(),
                    timeout=self._next_timer(),
                )
            except TimeoutError:
                await self._on_timer()
                continue
            while self.inbox:
                await self._apply(self.inbox.pop(0))

    def _continue_as_new_due(self) -> bool:
        if self._start_task is not None and not self._start_task.done():
            return False
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.inp.continue_as_new_after_events
        )

    def _next_timer(self) -> float | None:
        """Seconds to the next deadline or liveness check, None when nothing is armed."""
        now = workflow.now().timestamp()
        due = [self._deadline_remaining()]
        if self.state.status in LIVENESS_STATUSES and self.state.liveness_due_at is not None:
            due.append(max(0.0, self.state.liveness_due_at - now))
        armed = [d for d in due if d is not None]
        return min(armed) if armed else None

    async def _on_timer(self) -> None:
        now = workflow.now().timestamp()
        deadline = self.state.deadline_at
        if self.state.status == WorkspaceStatus.PROVISIONING and deadline is not None and now >= deadline:
            await self._on_deadline()
        elif (
            self.state.status in LIVENESS_STATUSES
            and self.state.liveness_due_at is not None
            and now >= self.state.liveness_due_at
        ):
            await self._check_liveness()

    def _deadline_remaining(self) -> float | None:
        if self.state.status != WorkspaceStatus.PROVISIONING or self.state.deadline_at is None:
            return None
        return max(0.0, self.state.deadline_at - workflow.now().timestamp())

    # --- provisioning ---------------------------------------------------------------------------

    async def _provision(self) -> bool:
        plan = await self._prepare()
        if plan is None:
            return False
        self.state.stale_after_secs = plan.stale_after_secs
        if self.inp.backend == "external":
            self.state.provisioned = True  # nothing to start: the agent registers from off-host
            return True
        await self._begin_generation(plan)
        return True

    async def _begin_generation(self, plan: ProvisionPlan) -> None:
        inp = self.inp
        self.state.timeout_secs = plan.timeout_secs
        self.state.deadline_at = workflow.now().timestamp() + plan.timeout_secs
        self.state.generation += 1
        if plan.missing_env:
            self.state.provisioned = True
            names = ", ".join(plan.missing_env)
            error = f"missing required env: {names}"
            await self._set_status(
                WorkspaceStatus.FAILED,
                EventType.WORKSPACE_PROVISION_FAILED,
                {"error": error, "missing": plan.missing_env, "runtime": inp.runtime, "source": "preflight"},
                last_sample_error=error,
            )
            return

        # The start runs beside the deadline wait: a slow start never delays the deadline verdict.
        self._start_task = asyncio.create_task(self._start_instance(plan.timeout_secs))

    async def _start_instance(self, timeout_secs: int) -> None:
        inp = self.inp
        assert self.state.deadline_at is not None
        try:
            result: StartResult = await workflow.execute_activity(
                "start_instance",
                StartRequest(
                    inp.workspace_id,
                    inp.runtime,
                    inp.backend,
                    inp.template,
                    self.state.generation,
                    self.state.deadline_at,
                    timeout_secs,
                ),
                result_type=StartResult,
                start_to_close_timeout=timedelta(minutes=2),
                # Retry until the deadline: the deadline verdict stays the one timeout path.
                schedule_to_close_timeout=timedelta(seconds=max(1.0, self._deadline_remaining() or 1.0)),
                retry_policy=_START_RETRY,
            )
            self.state.instance_id = result.instance_id
        except ActivityError as err:
            if self.state.status != WorkspaceStatus.PROVISIONING:
                return  # the deadline (or a register) already decided
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            error = f"could not start the instance: {message}"
            await self._set_status(
                WorkspaceStatus.FAILED,
                EventType.WORKSPACE_PROVISION_FAILED,
                {"error": error, "runtime": inp.runtime, "source": "start_failed"},
                last_sample_error=error,
            )
        finally:
            self.state.provisioned = True

    async def _prepare(self) -> ProvisionPlan | None:
        inp = self.inp
        for wait in (*_FIND_ROW_WAITS, None):
            try:
                plan: ProvisionPlan = await workflow.execute_activity(
                    "prepare_provision",
                    ProvisionRequest(inp.workspace_id, inp.runtime, inp.template),
                    result_type=ProvisionPlan,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=_DB_RETRY,
                )
                return plan
            except ActivityError as err:
                if not (isinstance(err.cause, ApplicationError) and err.cause.type == WORKSPACE_NOT_FOUND):
                    raise
            if wait is not None:
                await workflow.sleep(wait)
        return None

    async def _on_deadline(self) -> None:
        if self.state.status != WorkspaceStatus.PROVISIONING:
            return
        await self._set_status(
            WorkspaceStatus.FAILED,
            EventType.WORKSPACE_PROVISION_FAILED,
            {
                "error": PROVISION_TIMEOUT_ERROR,
                "timeout_secs": self.state.timeout_secs,
                "runtime": self.inp.runtime,
                "source": "provision_timeout",
                "deadline_at": self.state.deadline_at,
            },
            last_sample_error=PROVISION_TIMEOUT_ERROR,
        )

    # --- liveness -------------------------------------------------------------------------------

    async def _liveness_report(self, check_instance: bool) -> LivenessReport:
        report: LivenessReport = await workflow.execute_local_activity(
            "check_liveness",
            LivenessRequest(
                self.inp.workspace_id,
                self.inp.backend,
                self.state.instance_id,
                self.state.stale_after_secs,
                check_instance,
            ),
            result_type=LivenessReport,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_LOCAL_RETRY,
        )
        return report

    async def _check_liveness(self) -> None:
        """The timer fired: confirm from Postgres before acting, re-arm when a beat arrived."""
        stale = self.state.stale_after_secs
        report = await self._liveness_report(check_instance=False)
        last = max(report.last_heartbeat_at or 0.0, self.state.last_beat_at or 0.0)
        now = workflow.now().timestamp()
        if now - last < stale:
            self.state.liveness_due_at = last + stale + liveness_slack(stale)
            return
        external = self.inp.backend == "external"
        running = None if external else (await self._liveness_report(check_instance=True)).instance_running
        transition = on_stale(self.state.status, external=external, instance_running=running)
        self.state.liveness_due_at = now + stale
        if transition is None:
            return
        await self._set_status(
            transition.status,
            transition.event_type,
            {**transition.payload, "last_heartbeat_at": last or None, "stale_after_secs": stale},
            last_sample_error=transition.payload.get("sample_error"),
        )
        if transition.status == WorkspaceStatus.OFFLINE:
            await self._restart("auto_restart: heartbeat stale and the instance is not running")

    async def _restart(self, reason: str) -> None:
        """Stop the old instance (3 attempts), then reprovision with a fresh deadline and token."""
        old = self.state.instance_id
        if old and self.inp.backend != "external":
            try:
                await workflow.execute_activity(
                    "stop_instance",
                    StopRequest(self.inp.workspace_id, self.inp.backend, old),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=_STOP_RETRY,
                )
            except ActivityError as err:
                message = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
                workflow.upsert_search_attributes([sa.LEAK_SUSPECT.value_set(True)])
                await self._record_event(
                    EventType.WORKSPACE_LEAK_SUSPECT,
                    {
                        "workspace_id": self.inp.workspace_id,
                        "instance_id": old,
                        "attempts": 3,
                        "last_error": message,
                    },
                )
        self.state.instance_id = None
        await self._set_status(
            WorkspaceStatus.PROVISIONING, EventType.WORKSPACE_PROVISIONING, {"reason": reason}
        )
        plan = await self._prepare()
        if plan is not None:
            await self._begin_generation(plan)

    async def _record_event(self, event_type: EventType, payload: dict[str, Any]) -> None:
        self.state.transition_seq += 1
        await workflow.execute_activity(
            "record_event",
            EventRecord(
                self.inp.workspace_id,
                event_type.value,
                payload,
                f"{workflow.info().workflow_id}:{self.state.transition_seq}",
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_DB_RETRY,
        )

    # --- agent news -----------------------------------------------------------------------------

    async def _apply(self, message: RegisterSignal | HeartbeatSignal) -> None:
        transition: Transition | None
        self.state.last_beat_at = workflow.now().timestamp()
        if isinstance(message, RegisterSignal):
            transition = on_register(self.state.status, message.url, message.agent_card)
        else:
            if message.status_mgmt is not None:
                self.state.status_mgmt = message.status_mgmt
            transition = on_heartbeat(
                self.state.status,
                error_rate=message.error_rate,
                sample_error=message.sample_error,
                runtime_state=message.runtime_state,
                status_mgmt=self.state.status_mgmt,
            )
        if transition is not None:
            await self._set_status(
                transition.status,
                transition.event_type,
                transition.payload,
                last_sample_error=transition.payload.get("sample_error"),
                clear_sample_error=transition.clear_sample_error,
            )

    # --- the one status writer ------------------------------------------------------------------

    async def _set_status(
        self,
        status: WorkspaceStatus,
        event_type: EventType,
        payload: dict[str, Any],
        *,
        last_sample_error: str | None = None,
        clear_sample_error: bool = False,
    ) -> None:
        self.state.transition_seq += 1
        change = StatusChange(
            workspace_id=self.inp.workspace_id,
            status=status.value,
            event_type=event_type.value,
            payload=payload,
            key=f"{workflow.info().workflow_id}:{self.state.transition_seq}",
            last_sample_error=last_sample_error,
            clear_sample_error=clear_sample_error,
        )
        was_live = self.state.status in LIVENESS_STATUSES
        self.state.status = status.value
        if status in LIVENESS_STATUSES and not was_live:
            # Becoming live arms the liveness timer one stale window from now.
            now = workflow.now().timestamp()
            self.state.last_beat_at = max(self.state.last_beat_at or 0.0, now)
            self.state.liveness_due_at = now + self.state.stale_after_secs
        elif status not in LIVENESS_STATUSES:
            self.state.liveness_due_at = None
        workflow.upsert_search_attributes([sa.WORKSPACE_STATUS.value_set(status.value)])
        await workflow.execute_activity(
            "record_status",
            change,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_DB_RETRY,
        )
