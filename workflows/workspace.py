"""WorkspaceWorkflow: one durable workflow per workspace, the only writer of its status."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from domain import search_attributes as sa
    from domain.events import EventType
    from domain.models import (
        ActionResult,
        BootstrapFailedSignal,
        Command,
        DeleteRequest,
        EventRecord,
        HeartbeatSignal,
        IdleReport,
        InstanceReaped,
        LivenessReport,
        LivenessRequest,
        ProvisionPlan,
        ProvisionRequest,
        ReapRequest,
        RegisterSignal,
        RescueRequest,
        StartRequest,
        StartResult,
        StatusChange,
        StopRequest,
        TeardownRecord,
        TeardownState,
        VolumesRequest,
        WorkspaceInput,
        WorkspaceState,
    )
    from domain.status import WorkspaceStatus
    from domain.teardown import LEAK_SUSPECT_AFTER, RESTART_STOP_ATTEMPTS, stop_backoff, truncate_utf8
    from domain.timeouts import PROVISION_TIMEOUT_ERROR
    from domain.transitions import (
        HIBERNATABLE,
        LIVENESS_STATUSES,
        Transition,
        can_resume,
        liveness_slack,
        on_heartbeat,
        on_register,
        on_stale,
    )

# Types the activities raise; kept as literals so this module does not import activity code.
WORKSPACE_NOT_FOUND = "WorkspaceNotFound"
# Types the update validators raise; the API maps them to HTTP statuses.
REJECT_REMOVED = "WorkspaceRemoved"
REJECT_EXTERNAL = "ExternalRuntime"
REJECT_STATE = "InvalidState"

_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# The row may not be committed yet when the first task runs; one that never appears means the
# create was rolled back. Waits are workflow timers (~1 minute in all), then the workflow gives up.
_FIND_ROW_WAITS = (0.5, 1, 2, 4, 8, 15, 30)
_START_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Stops are retried by the workflow on its own timers (see _stop), one activity attempt at a time, so
# every attempt is visible in the history and the backoff is a timer the test server can skip.
_ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
_FOREVER = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))
_LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
_RESCUE_BUDGET = timedelta(seconds=45)

Message = RegisterSignal | HeartbeatSignal | BootstrapFailedSignal | Command | InstanceReaped


def _error_text(err: ActivityError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)


@workflow.defn(name="WorkspaceWorkflow")
class WorkspaceWorkflow:
    @workflow.init
    def __init__(self, inp: WorkspaceInput) -> None:
        # Set up from the input here, not in run(): an update can arrive in the very first task,
        # before run() starts, and its handler needs both.
        self.inp = inp
        if inp.state is not None:
            self.state = inp.state
        elif inp.backend == "external":
            self.state = WorkspaceState(status=WorkspaceStatus.AWAITING_AGENT.value)
        else:
            self.state = WorkspaceState(status=WorkspaceStatus.PROVISIONING.value)
        self.inbox: list[Message] = []
        self._start_task: asyncio.Task[None] | None = None
        self._rescue_task: asyncio.Task[None] | None = None

    # --- messages -------------------------------------------------------------------------------
    # Signal handlers only enqueue, and so do the updates that take time (restart, pause…): the
    # main loop applies messages in order, and continue-as-new never races a half-applied handler.
    # Delete, pause and hibernate write their status in the handler, so the reply is the truth.

    @workflow.signal(name="register")
    def register(self, signal: RegisterSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name="heartbeat")
    def heartbeat(self, signal: HeartbeatSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name="bootstrap_failed")
    def bootstrap_failed(self, signal: BootstrapFailedSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name="instance_reaped")
    def instance_reaped(self, signal: InstanceReaped) -> None:
        self.inbox.append(signal)

    @workflow.query(name="state")
    def query_state(self) -> WorkspaceState:
        return self.state

    def _reject_if_removed(self) -> None:
        if self.state.teardown is not None:
            raise ApplicationError("workspace removed", type=REJECT_REMOVED)

    @workflow.update(name="restart")
    def restart(self) -> ActionResult:
        if self.state.restart_pending:
            return ActionResult(WorkspaceStatus.PROVISIONING.value, coalesced=True)
        self.state.restart_pending = True
        self.inbox.append(Command("restart", "operator restart"))
        return ActionResult(WorkspaceStatus.PROVISIONING.value)

    @restart.validator
    def _validate_restart(self) -> None:
        self._reject_if_removed()
        if self.inp.backend == "external":
            raise ApplicationError("external agent: restart it on your side", type=REJECT_EXTERNAL)

    @workflow.update(name="resume")
    def resume(self) -> ActionResult:
        if self.state.restart_pending:
            return ActionResult(WorkspaceStatus.PROVISIONING.value, coalesced=True)
        self.state.restart_pending = True
        self.inbox.append(Command("resume", "resumed"))
        return ActionResult(WorkspaceStatus.PROVISIONING.value)

    @resume.validator
    def _validate_resume(self) -> None:
        self._reject_if_removed()
        if not can_resume(self.state.status) and not self.state.restart_pending:
            raise ApplicationError(
                f"cannot resume a workspace that is {self.state.status}", type=REJECT_STATE
            )

    @workflow.update(name="pause")
    async def pause(self) -> ActionResult:
        if self.state.status != WorkspaceStatus.PAUSED:
            await self._set_status(
                WorkspaceStatus.PAUSED, EventType.WORKSPACE_PAUSED, {"reason": "operator"}, local=True
            )
            self.inbox.append(Command("pause"))
        return ActionResult(WorkspaceStatus.PAUSED.value)

    @pause.validator
    def _validate_pause(self) -> None:
        self._reject_if_removed()

    @workflow.update(name="hibernate")
    async def hibernate(self) -> ActionResult:
        await self._set_status(
            WorkspaceStatus.HIBERNATING, EventType.WORKSPACE_HIBERNATING, {"reason": "operator"}, local=True
        )
        self.inbox.append(Command("hibernate", "operator"))
        return ActionResult(WorkspaceStatus.HIBERNATING.value)

    @hibernate.validator
    def _validate_hibernate(self) -> None:
        self._reject_if_removed()
        if WorkspaceStatus(self.state.status) not in HIBERNATABLE:
            raise ApplicationError(
                f"cannot hibernate a workspace that is {self.state.status}", type=REJECT_STATE
            )

    @workflow.update(name="delete")
    async def delete(self, req: DeleteRequest) -> ActionResult:
        if self.state.teardown is None:  # a repeated delete (an API retry) changes nothing
            self.state.teardown = TeardownState()
            payload: dict[str, Any] = {"cascade_deleted": req.cascade_deleted}
            if req.cascade_of:
                payload["cascade_of"] = req.cascade_of
            await self._set_status(WorkspaceStatus.REMOVED, EventType.WORKSPACE_REMOVED, payload, local=True)
        teardown = self.state.teardown
        return ActionResult(
            WorkspaceStatus.REMOVED.value, teardown="complete" if teardown.complete else "pending"
        )

    # --- main loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: WorkspaceInput) -> str:
        if not self.state.provisioned and self.state.teardown is None:
            if not await self._provision():
                return "abandoned: workspace row never appeared"

        while True:
            if self.state.teardown is not None:
                await self._teardown()
                await workflow.wait_condition(workflow.all_handlers_finished)
                return "removed"
            if self._continue_as_new_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self.inbox and self.state.teardown is None:
                    workflow.continue_as_new(replace(inp, state=self.state))
            try:
                await workflow.wait_condition(
                    lambda: (
                        bool(self.inbox) or self.state.teardown is not None or self._continue_as_new_due()
                    ),
                    timeout=self._next_timer(),
                )
            except TimeoutError:
                await self._on_timer()
                continue
            while self.inbox and self.state.teardown is None:
                await self._apply(self.inbox.pop(0))

    def _tasks_done(self) -> bool:
        return all(t is None or t.done() for t in (self._start_task, self._rescue_task))

    def _continue_as_new_due(self) -> bool:
        if not self._tasks_done():
            return False
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.inp.continue_as_new_after_events
        )

    def _now(self) -> float:
        return workflow.now().timestamp()

    def _next_timer(self) -> float | None:
        """Seconds to the next deadline, liveness, rescue-grace or idle check; None when none is armed."""
        state = self.state
        due: list[float | None] = []
        if state.status == WorkspaceStatus.PROVISIONING:
            due.append(state.deadline_at)
        if state.status in LIVENESS_STATUSES:
            due += [state.liveness_due_at, state.idle_due_at]
        if state.status == WorkspaceStatus.FAILED:
            due.append(state.rescue_until)
        armed = [at for at in due if at is not None]
        return max(0.0, min(armed) - self._now()) if armed else None

    async def _on_timer(self) -> None:
        now = self._now()
        state = self.state
        if (
            state.status == WorkspaceStatus.PROVISIONING
            and state.deadline_at is not None
            and now >= state.deadline_at
        ):
            await self._on_deadline()
        elif (
            state.status in LIVENESS_STATUSES
            and state.liveness_due_at is not None
            and now >= state.liveness_due_at
        ):
            await self._check_liveness()
        elif state.status in LIVENESS_STATUSES and state.idle_due_at is not None and now >= state.idle_due_at:
            await self._check_idle()
        elif (
            state.status == WorkspaceStatus.FAILED
            and state.rescue_until is not None
            and now >= state.rescue_until
        ):
            await self._reap_failed()

    def _deadline_remaining(self) -> float | None:
        if self.state.status != WorkspaceStatus.PROVISIONING or self.state.deadline_at is None:
            return None
        return max(0.0, self.state.deadline_at - self._now())

    async def _apply(self, message: Message) -> None:
        if isinstance(message, Command):
            await self._run_command(message)
        elif isinstance(message, BootstrapFailedSignal):
            await self._on_bootstrap_failed(message)
        elif isinstance(message, InstanceReaped):
            await self._on_instance_reaped(message)
        else:
            await self._apply_agent_news(message)

    # --- provisioning ---------------------------------------------------------------------------

    async def _provision(self) -> bool:
        plan = await self._prepare()
        if plan is None:
            return False
        self.state.stale_after_secs = plan.stale_after_secs
        self.state.rescue_grace_secs = plan.rescue_grace_secs
        if self.inp.backend == "external":
            self.state.provisioned = True  # nothing to start: the agent registers from off-host
            return True
        await self._begin_generation(plan)
        return True

    async def _begin_generation(self, plan: ProvisionPlan) -> None:
        inp = self.inp
        if self.state.teardown is not None:
            return  # deleted meanwhile: nothing new may start
        self.state.timeout_secs = plan.timeout_secs
        self.state.deadline_at = self._now() + plan.timeout_secs
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
                return  # the deadline, a register or an operator already decided
            error = f"could not start the instance: {_error_text(err)}"
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
        self._capture_rescue("provision_timeout")

    async def _on_bootstrap_failed(self, signal: BootstrapFailedSignal) -> None:
        if self.state.status != WorkspaceStatus.PROVISIONING:
            return  # provisioning → failed only; the API answered 409 for anything else
        log_tail = truncate_utf8(signal.log_tail)
        error = "bootstrap failed (reported by the boot watcher)"
        await self._set_status(
            WorkspaceStatus.FAILED,
            EventType.WORKSPACE_PROVISION_FAILED,
            {
                "error": error,
                "runtime": self.inp.runtime,
                "source": "bootstrap_watcher",
                "log_tail": log_tail,
            },
            last_sample_error=error,
        )
        self._capture_rescue("bootstrap_watcher", log_tail)

    def _capture_rescue(self, reason: str, log_tail: str = "") -> None:
        """Evidence for a failed boot, captured after the flip so it never delays the verdict."""
        request = RescueRequest(
            self.inp.workspace_id,
            self.inp.backend,
            self.state.instance_id,
            self.inp.runtime,
            self.inp.template,
            self.state.generation,
            reason,
            log_tail,
        )

        async def capture() -> None:
            try:
                await workflow.execute_activity(
                    "capture_rescue",
                    request,
                    schedule_to_close_timeout=_RESCUE_BUDGET,
                    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
                )
            except ActivityError:
                workflow.logger.warning("rescue bundle for %s not captured", self.inp.workspace_id)

        self._rescue_task = asyncio.create_task(capture())

    async def _reap_failed(self) -> None:
        """The rescue grace is over: stop the failed instance and drop its volumes."""
        await workflow.wait_condition(self._tasks_done)
        self.state.rescue_until = None
        old, stopped = await self._release_instance()
        if stopped:
            await self._remove_volumes()
        await self._record_event(
            EventType.WORKSPACE_RESCUE_REAPED,
            {
                "instance_id": old,
                "volumes_removed": stopped,
                "rescue_grace_secs": self.state.rescue_grace_secs,
            },
        )

    # --- operator commands ----------------------------------------------------------------------

    async def _run_command(self, command: Command) -> None:
        if command.kind in ("restart", "resume"):
            await self._restart(command.reason)
        elif command.kind == "pause":
            await self._pause()
        elif command.kind == "hibernate":
            await self._hibernate(command.reason)

    async def _restart(self, reason: str) -> None:
        """Stop the old instance (3 attempts, then a reaper), then reprovision with a fresh deadline
        and token. At most one start is ever in flight, so two instances never coexist."""
        self.state.restart_pending = True
        try:
            await workflow.wait_condition(self._start_done)
            self.state.deadline_at = None  # the old generation's deadline no longer applies
            await self._set_status(
                WorkspaceStatus.PROVISIONING, EventType.WORKSPACE_PROVISIONING, {"reason": reason}
            )
            await self._release_instance()
            plan = await self._prepare()
            if plan is not None and self.state.teardown is None:
                await self._begin_generation(plan)
        finally:
            self.state.restart_pending = False

    async def _pause(self) -> None:
        self.state.deadline_at = None
        await self._release_instance()
        if self.state.status != WorkspaceStatus.PAUSED:  # a start finishing meanwhile may have flipped it
            await self._set_status(WorkspaceStatus.PAUSED, EventType.WORKSPACE_PAUSED, {"reason": "operator"})

    async def _hibernate(self, reason: str) -> None:
        if self.state.status != WorkspaceStatus.HIBERNATING:
            await self._set_status(
                WorkspaceStatus.HIBERNATING, EventType.WORKSPACE_HIBERNATING, {"reason": reason}
            )
        await self._release_instance()
        await self._set_status(WorkspaceStatus.HIBERNATED, EventType.WORKSPACE_HIBERNATED, {"reason": reason})

    # --- stopping instances ---------------------------------------------------------------------

    def _start_done(self) -> bool:
        return self._start_task is None or self._start_task.done()

    async def _release_instance(self) -> tuple[str | None, bool]:
        """Once any start has finished, stop the current instance (3 attempts, then a reaper) and
        forget it. Returns the instance and whether it is confirmed stopped."""
        await workflow.wait_condition(self._start_done)
        old = self.state.instance_id
        stopped = True
        if old and self.inp.backend != "external":
            stopped = await self._stop_or_hand_to_reaper(old)
        self.state.instance_id = None
        return old, stopped

    async def _stop(
        self, instance_id: str, max_attempts: int | None, teardown: TeardownState | None = None
    ) -> bool:
        """Stop with backoff on workflow timers (1 s, 2 s, 4 s … capped at 5 min). After the 3rd
        failure the instance is a leak suspect (event + search attribute), cleared on success.
        Without max_attempts it never gives up."""
        attempts = 0
        suspect = False
        while True:
            try:
                await workflow.execute_activity(
                    "stop_instance",
                    StopRequest(self.inp.workspace_id, self.inp.backend, instance_id),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=_ONE_ATTEMPT,
                )
                if suspect:
                    await self._clear_leak_suspect(instance_id, attempts)
                return True
            except ActivityError as err:
                attempts += 1
                error = _error_text(err)
                if teardown is not None:
                    teardown.attempts, teardown.last_error = attempts, error
                if attempts == LEAK_SUSPECT_AFTER:
                    suspect = True
                    workflow.upsert_search_attributes([sa.LEAK_SUSPECT.value_set(True)])
                    await self._record_event(
                        EventType.WORKSPACE_LEAK_SUSPECT,
                        {
                            "workspace_id": self.inp.workspace_id,
                            "instance_id": instance_id,
                            "attempts": attempts,
                            "last_error": error,
                        },
                    )
                    if teardown is not None:
                        teardown.leak_suspect = True
                        await self._record_teardown()
                if max_attempts is not None and attempts >= max_attempts:
                    return False
                await workflow.sleep(stop_backoff(attempts))
                if teardown is not None and self._continue_as_new_due():
                    # Days of failures must not grow one history forever: carry on in a new run.
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(replace(self.inp, state=self.state))

    async def _clear_leak_suspect(self, instance_id: str, attempts: int) -> None:
        workflow.upsert_search_attributes([sa.LEAK_SUSPECT.value_set(False)])
        if self.state.teardown is not None:
            self.state.teardown.leak_suspect = False
        await self._record_event(
            EventType.WORKSPACE_LEAK_CLEARED, {"instance_id": instance_id, "attempts": attempts + 1}
        )

    async def _stop_or_hand_to_reaper(self, instance_id: str) -> bool:
        if await self._stop(instance_id, RESTART_STOP_ATTEMPTS):
            return True
        # The workspace moves on; a reaper keeps at the old instance until it is gone.
        await workflow.start_child_workflow(
            "ReaperWorkflow",
            ReapRequest(self.inp.workspace_id, self.inp.backend, instance_id, workflow.info().workflow_id),
            id=f"reaper-{self.inp.workspace_id}-{self.state.generation}-{self.state.transition_seq}",
            parent_close_policy=ParentClosePolicy.ABANDON,
        )
        return False

    async def _on_instance_reaped(self, signal: InstanceReaped) -> None:
        await self._clear_leak_suspect(signal.instance_id, 0)

    async def _remove_volumes(self) -> None:
        await workflow.execute_activity(
            "remove_volumes",
            VolumesRequest(self.inp.workspace_id, self.inp.backend),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_FOREVER,
        )

    async def _teardown(self) -> None:
        """Delete: stop the instance (never giving up), then remove volumes, then complete."""
        teardown = self.state.teardown
        assert teardown is not None
        await workflow.wait_condition(self._tasks_done)
        if not teardown.instance_stopped:
            old = self.state.instance_id
            if old and self.inp.backend != "external":
                await self._stop(old, None, teardown)
            self.state.instance_id = None
            teardown.instance_stopped = True
            await self._record_teardown()
        if not teardown.volumes_removed:
            await self._remove_volumes()  # only ever after a confirmed stop
            teardown.volumes_removed = True
        teardown.complete = True
        await self._record_teardown()
        await self._record_event(
            EventType.WORKSPACE_TEARDOWN_COMPLETE,
            {"attempts": teardown.attempts, "last_error": teardown.last_error},
        )

    async def _record_teardown(self) -> None:
        assert self.state.teardown is not None
        await workflow.execute_activity(
            "record_teardown",
            TeardownRecord(self.inp.workspace_id, replace(self.state.teardown)),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_DB_RETRY,
        )

    # --- liveness and idleness ------------------------------------------------------------------

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
        now = self._now()
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

    def _idle_secs(self) -> float:
        return self.inp.hibernation_idle_minutes * 60.0

    async def _check_idle(self) -> None:
        """Hibernate after `hibernation_idle_minutes` without activity, confirmed from Postgres."""
        report: IdleReport = await workflow.execute_local_activity(
            "check_idle",
            self.inp.workspace_id,
            result_type=IdleReport,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_LOCAL_RETRY,
        )
        now = self._now()
        idle = self._idle_secs()
        last_active = report.last_active_at or now
        if report.active_tasks == 0 and now - last_active >= idle:
            self.state.idle_due_at = None
            await self._hibernate(f"idle for {self.inp.hibernation_idle_minutes} min")
        else:
            self.state.idle_due_at = (
                max(last_active + idle, now + 1.0) if report.active_tasks == 0 else now + idle
            )

    # --- agent news -----------------------------------------------------------------------------

    async def _apply_agent_news(self, message: RegisterSignal | HeartbeatSignal) -> None:
        transition: Transition | None
        self.state.last_beat_at = self._now()
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
        local: bool = False,
    ) -> None:
        if self.state.teardown is not None and status != WorkspaceStatus.REMOVED:
            return  # removed is final; the store refuses it too
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
        self._arm_timers_for(status)
        self.state.status = status.value
        workflow.upsert_search_attributes([sa.WORKSPACE_STATUS.value_set(status.value)])
        if local:  # answered inside an update: one workflow task instead of an activity round trip
            await workflow.execute_local_activity(
                "record_status",
                change,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_LOCAL_RETRY,
            )
        else:
            await workflow.execute_activity(
                "record_status", change, start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY
            )

    def _arm_timers_for(self, status: WorkspaceStatus) -> None:
        now = self._now()
        was_live = self.state.status in LIVENESS_STATUSES
        if status in LIVENESS_STATUSES and not was_live:
            # Becoming live arms the liveness timer one stale window from now, and the idle timer.
            self.state.last_beat_at = max(self.state.last_beat_at or 0.0, now)
            self.state.liveness_due_at = now + self.state.stale_after_secs
            self.state.idle_due_at = (
                now + self._idle_secs() if self.inp.hibernation_idle_minutes > 0 else None
            )
        elif status not in LIVENESS_STATUSES:
            self.state.liveness_due_at = None
            self.state.idle_due_at = None
        if status == WorkspaceStatus.FAILED:
            if self.state.status != WorkspaceStatus.FAILED:
                self.state.rescue_until = now + self.state.rescue_grace_secs
        else:
            self.state.rescue_until = None

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


@workflow.defn(name="ReaperWorkflow")
class ReaperWorkflow:
    """Keeps stopping one instance a workspace has moved on from, until it is gone."""

    @workflow.run
    async def run(self, req: ReapRequest) -> int:
        attempts = 0
        while True:
            try:
                await workflow.execute_activity(
                    "stop_instance",
                    StopRequest(req.workspace_id, req.backend, req.instance_id),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=_ONE_ATTEMPT,
                )
                break
            except ActivityError:
                attempts += 1
                await workflow.sleep(stop_backoff(LEAK_SUSPECT_AFTER + attempts))
                if workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(req)
        parent = workflow.get_external_workflow_handle(req.parent_workflow_id)
        try:
            await parent.signal("instance_reaped", InstanceReaped(req.instance_id))
        except Exception:
            workflow.logger.info("workspace workflow %s no longer running", req.parent_workflow_id)
        return attempts
