"""WorkspaceWorkflow: one durable workflow per workspace, the only writer of its status.

Reads top to bottom: messages (signals, updates, the query) → the main loop → provisioning →
operator commands → stopping instances → liveness and idleness → agent news. Every status write goes
through the one writer (workflows/status_writer.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.calls import failure_detail, failure_type, local, store
from workflows.drain import QueueDrainer
from workflows.rescue import capture_after_the_verdict
from workflows.status_writer import StatusWriter
from workflows.stopping import StopOutcome, Stopper

with workflow.unsafe.imports_passed_through():
    from domain import contract
    from domain import search_attributes as sa
    from domain.contract import ActivityErrorType, Signal, Update
    from domain.events import EventType
    from domain.failures import start_failure_message
    from domain.lifecycle import Timer, armed, next_due
    from domain.models import (
        ActionResult,
        BootstrapFailedSignal,
        Command,
        CommandKind,
        DeleteRequest,
        DrainSignal,
        HeartbeatSignal,
        InstanceReaped,
        LivenessReport,
        LivenessRequest,
        PauseRequest,
        ProvisionPlan,
        ProvisionRequest,
        RegisterSignal,
        RescueRequest,
        StartRequest,
        TeardownRecord,
        TeardownState,
        WorkspaceInput,
        WorkspaceState,
    )
    from domain.status import WorkspaceStatus
    from domain.teardown import truncate_utf8
    from domain.timeouts import PROVISION_TIMEOUT_ERROR
    from domain.transitions import (
        RESTARTABLE,
        RESUMABLE,
        Transition,
        liveness_slack,
        on_heartbeat,
        on_register,
        on_stale,
        update_rejection,
    )

# The row may not be committed yet when the first task runs; one that never appears means the
# create was rolled back. Waits are workflow timers (~1 minute in all), then the workflow gives up.
_FIND_ROW_WAITS = (0.5, 1, 2, 4, 8, 15, 30)
_START_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# A start heartbeats while it launches: a worker killed mid-start is noticed this fast, and the
# start can be told to give up when the workspace moves on.
_START_HEARTBEAT = timedelta(seconds=10)
# Seconds before a deadline at which the workflow wakes to re-arm its timer. The last stretch stays
# over a second: the server fires a shorter timer only after a second.
DEADLINE_APPROACH = 3.0

Message = RegisterSignal | HeartbeatSignal | BootstrapFailedSignal | Command | InstanceReaped


@workflow.defn(name=contract.WORKSPACE_WORKFLOW)
class WorkspaceWorkflow:
    @workflow.init
    def __init__(self, inp: WorkspaceInput) -> None:
        # Set up from the input here, not in run(): an update can arrive in the very first task,
        # before run() starts, and its handler needs both.
        self.inp = inp
        if inp.state is not None:
            self.state = inp.state
        elif inp.backend == "external":
            self.state = WorkspaceState(status=WorkspaceStatus.AWAITING_AGENT)
        else:
            self.state = WorkspaceState(status=WorkspaceStatus.PROVISIONING)
        self.inbox: list[Message] = []
        self._start_task: asyncio.Task[None] | None = None
        self._rescue_task: asyncio.Task[None] | None = None
        # The one status writer: one write at a time, in the order of their sequence numbers.
        self._writer = StatusWriter(inp, self.state)
        self._set_status = self._writer.write
        self._record_event = self._writer.event
        self._drainer = QueueDrainer(inp.workspace_id)
        self._stopper = Stopper(inp.workspace_id, inp.backend, self._record_event, self._on_leak_change)
        self._timer_handlers: dict[Timer, Callable[[], Awaitable[None]]] = {
            Timer.DEADLINE: self._on_deadline,
            Timer.LIVENESS: self._check_liveness,
            Timer.IDLE: self._check_idle,
            Timer.RESCUE_GRACE: self._reap_failed,
        }

    # --- messages -------------------------------------------------------------------------------
    # Signal handlers only enqueue, and so do the updates that take time (restart, pause…): the
    # main loop applies messages in order, and continue-as-new never races a half-applied handler.
    # Delete, pause and hibernate write their status in the handler, so the reply is the truth.

    @workflow.signal(name=Signal.REGISTER)
    def register(self, signal: RegisterSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name=Signal.HEARTBEAT)
    def heartbeat(self, signal: HeartbeatSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name=Signal.DRAIN_QUEUE)
    def drain_queue(self, signal: DrainSignal) -> None:
        # Not a status change, so not queued behind the inbox: the drain runs beside the main loop.
        if self.state.teardown is None and self.state.status in (
            WorkspaceStatus.ONLINE,
            WorkspaceStatus.DEGRADED,
        ):
            self._drainer.request(signal.capacity)

    @workflow.signal(name=Signal.BOOTSTRAP_FAILED)
    def bootstrap_failed(self, signal: BootstrapFailedSignal) -> None:
        self.inbox.append(signal)

    @workflow.signal(name=Signal.INSTANCE_REAPED)
    def instance_reaped(self, signal: InstanceReaped) -> None:
        self.inbox.append(signal)

    @workflow.query(name=contract.STATE_QUERY)
    def query_state(self) -> WorkspaceState:
        return self.state

    def _validate(self, update: Update) -> None:
        state = self.state
        rejection = update_rejection(
            update,
            state.status,
            removed=state.teardown is not None,
            external=self.inp.backend == "external",
            restart_pending=state.restart_pending,
        )
        if rejection is not None:
            kind, message = rejection
            raise ApplicationError(message, type=kind)

    def _queue_restart(self, kind: CommandKind, reason: str) -> ActionResult:
        if self.state.restart_pending:
            return ActionResult(WorkspaceStatus.PROVISIONING, coalesced=True)
        self.state.restart_pending = True
        self.inbox.append(Command(kind, reason, requested_at=self._now()))
        return ActionResult(WorkspaceStatus.PROVISIONING)

    @workflow.update(name=Update.RESTART)
    def restart(self) -> ActionResult:
        return self._queue_restart(CommandKind.RESTART, "operator restart")

    @restart.validator
    def _validate_restart(self) -> None:
        self._validate(Update.RESTART)

    @workflow.update(name=Update.RESUME)
    def resume(self) -> ActionResult:
        return self._queue_restart(CommandKind.RESUME, "resumed")

    @resume.validator
    def _validate_resume(self) -> None:
        self._validate(Update.RESUME)

    def _drop_queued_commands(self) -> None:
        """An operator's pause or hibernate supersedes the restart, resume or hibernate they queued
        before it: those are not carried out after it."""
        queued = [m for m in self.inbox if isinstance(m, Command)]
        if any(c.kind in (CommandKind.RESTART, CommandKind.RESUME) for c in queued):
            self.state.restart_pending = False  # a queued one is never the one running
        self.inbox = [m for m in self.inbox if not isinstance(m, Command) or m.kind == CommandKind.PAUSE]

    @workflow.update(name=Update.PAUSE)
    async def pause(self, req: PauseRequest | None = None) -> ActionResult:
        self._drop_queued_commands()
        if self.state.status != WorkspaceStatus.PAUSED:
            payload: dict[str, Any] = {"reason": "operator"}
            if req is not None and req.cascade_of:
                payload["cascade_of"] = req.cascade_of
            await self._set_status(WorkspaceStatus.PAUSED, EventType.WORKSPACE_PAUSED, payload, quick=True)
            self.inbox.append(Command(CommandKind.PAUSE))
        return ActionResult(WorkspaceStatus.PAUSED)

    @pause.validator
    def _validate_pause(self, req: PauseRequest | None = None) -> None:
        self._validate(Update.PAUSE)

    @workflow.update(name=Update.HIBERNATE)
    async def hibernate(self) -> ActionResult:
        self._drop_queued_commands()
        await self._set_status(
            WorkspaceStatus.HIBERNATING,
            EventType.WORKSPACE_HIBERNATING,
            {"reason": "operator"},
            quick=True,
        )
        self.inbox.append(Command(CommandKind.HIBERNATE, "operator"))
        return ActionResult(WorkspaceStatus.HIBERNATING)

    @hibernate.validator
    def _validate_hibernate(self) -> None:
        self._validate(Update.HIBERNATE)

    @workflow.update(name=Update.DELETE)
    async def delete(self, req: DeleteRequest) -> ActionResult:
        if self.state.teardown is None:  # a repeated delete (an API retry) changes nothing
            self.state.teardown = TeardownState()
            payload: dict[str, Any] = {"cascade_deleted": req.cascade_deleted}
            if req.cascade_of:
                payload["cascade_of"] = req.cascade_of
            await self._set_status(WorkspaceStatus.REMOVED, EventType.WORKSPACE_REMOVED, payload, quick=True)
        teardown = self.state.teardown
        return ActionResult(WorkspaceStatus.REMOVED, teardown="complete" if teardown.complete else "pending")

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
                    timeout=self._seconds_to_next_timer(),
                )
            except TimeoutError:
                await self._fire_due_timer()
                continue
            while self.inbox and self.state.teardown is None:
                await self._apply(self.inbox.pop(0))

    def _tasks_done(self) -> bool:
        return self._drainer.done and all(
            t is None or t.done() for t in (self._start_task, self._rescue_task)
        )

    def _continue_as_new_due(self) -> bool:
        if not self._tasks_done() or self._writer.busy:
            return False
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.inp.continue_as_new_after_events
        )

    def _now(self) -> float:
        return workflow.now().timestamp()

    def _seconds_to_next_timer(self) -> float | None:
        due = next_due(self.state.due, self.state.status)
        if due is None:
            return None
        timer, at = due
        remaining = max(0.0, at - self._now())
        # A timer starts when its workflow task completes, later than workflow.now() by however long
        # that task took under load, and a deadline is armed under the load of the burst that created
        # it: wake a little early once, and re-arm the last stretch from a fresher now.
        if timer == Timer.DEADLINE and remaining > DEADLINE_APPROACH + 1:
            return remaining - DEADLINE_APPROACH
        return remaining

    async def _fire_due_timer(self) -> None:
        due = next_due(self.state.due, self.state.status)
        if due is not None and self._now() >= due[1]:
            timer, _ = due
            await self._timer_handlers[timer]()

    async def _apply(self, message: Message) -> None:
        if isinstance(message, Command):
            await self._run_command(message)
        elif isinstance(message, BootstrapFailedSignal):
            await self._on_bootstrap_failed(message)
        elif isinstance(message, InstanceReaped):
            await self._stopper.cleared(message.instance_id)
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
        self.state.generation += 1
        # The deadline counts from the operator's create, not from when this task ran.
        await self._begin_generation(plan, self.inp.created_at or self._now())
        return True

    async def _begin_generation(self, plan: ProvisionPlan, anchor: float) -> None:
        if self.state.teardown is not None or self.state.status != WorkspaceStatus.PROVISIONING:
            return  # deleted or paused meanwhile: nothing new may start
        self.state.timeout_secs = plan.timeout_secs
        self.state.due[Timer.DEADLINE] = anchor + plan.timeout_secs
        if plan.missing_env:
            self.state.provisioned = True
            error = f"missing required env: {', '.join(plan.missing_env)}"
            await self._fail_boot("preflight", error, {"missing": plan.missing_env}, capture=False)
            return
        # The start runs beside the deadline wait: a slow start never delays the deadline verdict.
        start = self._start_instance(self.state.generation, plan.timeout_secs, anchor + plan.timeout_secs)
        self._start_task = asyncio.create_task(start)

    async def _start_instance(self, generation: int, timeout_secs: int, deadline_at: float) -> None:
        inp = self.inp
        req = StartRequest(
            inp.workspace_id, inp.runtime, inp.backend, inp.template, generation, deadline_at, timeout_secs
        )  # fmt: skip
        try:
            result = await workflow.execute_activity(
                contract.start_instance,
                req,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=_START_HEARTBEAT,
                # Retry until the deadline: the deadline verdict stays the one timeout path.
                schedule_to_close_timeout=timedelta(seconds=max(1.0, deadline_at - self._now())),
                retry_policy=_START_RETRY,
            )
            if generation == self.state.generation and self.state.teardown is None:
                self.state.instance_id = result.instance_id
                self.state.instance_token_id = result.token_id
        except ActivityError as err:
            if generation != self.state.generation or self.state.status != WorkspaceStatus.PROVISIONING:
                return  # the deadline, a register or an operator already decided
            if isinstance(err.cause, TemporalTimeoutError):
                return  # retried until the deadline: the deadline's own verdict says so
            kind = failure_type(err)
            if kind != ActivityErrorType.SUPERSEDED:
                error = start_failure_message(kind)
                await self._fail_boot("start_failed", error, {}, detail=failure_detail(err))
        except asyncio.CancelledError:
            return  # the workspace moved on; whatever the attempt launched is stopped by the caller
        finally:
            if generation == self.state.generation:
                self.state.provisioned = True

    async def _prepare(self) -> ProvisionPlan | None:
        inp = self.inp
        for wait in (*_FIND_ROW_WAITS, None):
            try:
                return await store(
                    contract.prepare_provision, ProvisionRequest(inp.workspace_id, inp.runtime, inp.template)
                )
            except ActivityError as err:
                if failure_type(err) != ActivityErrorType.WORKSPACE_NOT_FOUND:
                    raise
            if wait is not None:
                await workflow.sleep(wait)
        return None

    async def _on_deadline(self) -> None:
        deadline_at = self.state.due.pop(Timer.DEADLINE, None)
        extra = {"timeout_secs": self.state.timeout_secs, "deadline_at": deadline_at}
        await self._fail_boot("provision_timeout", PROVISION_TIMEOUT_ERROR, extra)

    async def _on_bootstrap_failed(self, signal: BootstrapFailedSignal) -> None:
        if self.state.status != WorkspaceStatus.PROVISIONING:
            return  # provisioning → failed only; the API answered 409 for anything else
        log_tail = truncate_utf8(signal.log_tail)
        error = "bootstrap failed (reported by the boot watcher)"
        await self._fail_boot("bootstrap_watcher", error, {"log_tail": log_tail}, log_tail=log_tail)

    async def _fail_boot(
        self,
        source: str,
        error: str,
        extra: dict[str, Any],
        *,
        capture: bool = True,
        log_tail: str = "",
        detail: str = "",
    ) -> None:
        """provisioning → failed with the verdict's evidence, then (best effort) its rescue bundle."""
        payload = {"error": error, "runtime": self.inp.runtime, "source": source, **extra}
        wrote = await self._set_status(
            WorkspaceStatus.FAILED,
            EventType.WORKSPACE_PROVISION_FAILED,
            payload,
            last_sample_error=error,
            from_statuses=(WorkspaceStatus.PROVISIONING,),
            quick=True,
        )
        if wrote and capture:
            self._capture_rescue(source, log_tail, detail)

    def _capture_rescue(self, reason: str, log_tail: str = "", detail: str = "") -> None:
        """Evidence for a failed boot, captured after the flip so it never delays the verdict."""
        inp, state = self.inp, self.state
        request = RescueRequest(
            inp.workspace_id, inp.backend, state.instance_id, inp.runtime, inp.template, state.generation,
            reason, log_tail, detail,
        )  # fmt: skip

        self._rescue_task = asyncio.create_task(capture_after_the_verdict(request))

    async def _reap_failed(self) -> None:
        """The rescue grace is over: stop the failed instance and drop its volumes."""
        self.state.due.pop(Timer.RESCUE_GRACE, None)
        self._drainer.cancel()
        await workflow.wait_condition(self._tasks_done)
        old = self.state.instance_id
        stopped = await self._release_instances()
        if stopped:
            await self._stopper.remove_volumes()
        grace = self.state.rescue_grace_secs
        reaped = {"instance_id": old, "volumes_removed": stopped, "rescue_grace_secs": grace}
        await self._record_event(EventType.WORKSPACE_RESCUE_REAPED, reaped)

    # --- operator commands ----------------------------------------------------------------------

    async def _run_command(self, command: Command) -> None:
        if command.kind == CommandKind.RESTART:
            await self._restart(command.reason, command.requested_at, RESTARTABLE)
        elif command.kind == CommandKind.RESUME:
            await self._restart(command.reason, command.requested_at, RESUMABLE)
        elif command.kind == CommandKind.PAUSE:
            await self._pause()
        elif command.kind == CommandKind.HIBERNATE and self.state.status == WorkspaceStatus.HIBERNATING:
            await self._hibernate(command.reason)  # (a pause or delete since supersedes it)

    async def _restart(
        self, reason: str, requested_at: float | None, from_statuses: frozenset[WorkspaceStatus]
    ) -> None:
        """Stop every old instance (3 attempts, then a reaper), then reprovision with a fresh deadline
        and token. The new generation is written first, so a launch of the old one that completes
        late stops itself, and at most one start is ever in flight. Dropped when an operator paused
        or hibernated the workspace since it was asked for."""
        self.state.restart_pending = True
        anchor = requested_at or self._now()
        try:
            generation = self.state.generation + 1
            wrote = await self._set_status(
                WorkspaceStatus.PROVISIONING,
                EventType.WORKSPACE_PROVISIONING,
                {"reason": reason},
                generation=generation,
                from_statuses=tuple(from_statuses),
            )
            if not wrote:
                return
            self.state.generation = generation
            # The old instance may beat until it is stopped: its news no longer counts.
            self.state.stale_through_token = max(
                self.state.stale_through_token, self.state.instance_token_id or 0
            )
            self.state.due.pop(Timer.DEADLINE, None)  # the old generation's deadline no longer applies
            await self._release_instances(below_generation=self.state.generation)
            plan = await self._prepare()
            if plan is not None:
                await self._begin_generation(plan, anchor)
        finally:
            self.state.restart_pending = False

    async def _pause(self) -> None:
        self.state.due.pop(Timer.DEADLINE, None)
        await self._release_instances()

    async def _hibernate(self, reason: str, from_status: WorkspaceStatus | None = None) -> None:
        """hibernating → instance released → hibernated. `from_status`: the idle timer's decision,
        dropped when the status moved meanwhile (an operator's pause, say)."""
        if from_status is not None:
            wrote = await self._set_status(
                WorkspaceStatus.HIBERNATING,
                EventType.WORKSPACE_HIBERNATING,
                {"reason": reason},
                from_statuses=(from_status,),
            )
            if not wrote:
                return
        await self._release_instances()
        await self._set_status(
            WorkspaceStatus.HIBERNATED,
            EventType.WORKSPACE_HIBERNATED,
            {"reason": reason},
            from_statuses=(WorkspaceStatus.HIBERNATING,),
        )

    # --- stopping instances ---------------------------------------------------------------------

    def _abandon_start(self) -> None:
        """Stop waiting for a start in flight: the stop that follows covers whatever it launched,
        and the start itself stops a launch that completes after the workspace moved on."""
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()

    async def _release_instances(self, below_generation: int | None = None) -> bool:
        """Stop every instance of the workspace older than `below_generation` (default: all it has
        had so far) with 3 attempts, then a reaper keeps at it; forget them. True when confirmed."""
        self._abandon_start()
        await workflow.wait_condition(lambda: self._rescue_task is None or self._rescue_task.done())
        stopped = True
        if self.inp.backend != "external":
            below = below_generation if below_generation is not None else self.state.generation + 1
            reaper_id = f"reaper-{self.inp.workspace_id}-{self.state.generation}-{self.state.transition_seq}"
            outcome = await self._stopper.stop_bounded(self.state.instance_id, below, reaper_id)
            stopped = outcome == StopOutcome.STOPPED
            if not stopped:
                self.state.reapers.append(reaper_id)
        self.state.instance_id = None
        return stopped

    def _on_leak_change(self, suspect: bool) -> None:
        workflow.upsert_search_attributes([sa.LEAK_SUSPECT.value_set(suspect)])
        if self.state.teardown is not None:
            self.state.teardown.leak_suspect = suspect

    async def _teardown(self) -> None:
        """Delete: stop every instance (never giving up), then remove volumes, then complete."""
        teardown = self.state.teardown
        assert teardown is not None
        self._abandon_start()
        self._drainer.cancel()  # a message in flight to a workspace being removed is not waited for
        await workflow.wait_condition(self._tasks_done)
        if not teardown.instance_stopped:
            if self.inp.backend != "external":
                await self._stopper.stop_until_gone(self.state.instance_id, teardown, self._on_stop_failure)
            self.state.instance_id = None
            teardown.instance_stopped = True
            await self._record_teardown()
        if not teardown.complete:
            # Only ever after a confirmed stop; False when another platform owns them (kept, with an event).
            teardown.volumes_removed = await self._stopper.remove_volumes()
        teardown.complete = True
        await self._record_teardown()
        if workflow.patched("chat-files-removed-at-teardown"):
            await self._stopper.remove_files()
        await self._stopper.wake_reapers(self.state.reapers)
        await self._record_event(
            EventType.WORKSPACE_TEARDOWN_COMPLETE,
            {"attempts": teardown.attempts, "last_error": teardown.last_error},
        )

    async def _on_stop_failure(self, first_suspect: bool) -> None:
        """Called after each failed teardown stop: report progress, and carry on in a new run when
        the history grows (days of failures must not grow one history forever)."""
        if first_suspect:
            await self._record_teardown()
        if self._continue_as_new_due():
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(replace(self.inp, state=self.state))

    async def _record_teardown(self) -> None:
        assert self.state.teardown is not None
        await store(
            contract.record_teardown, TeardownRecord(self.inp.workspace_id, replace(self.state.teardown))
        )

    # --- liveness and idleness ------------------------------------------------------------------

    async def _liveness_report(self, check_instance: bool) -> LivenessReport:
        inp, state = self.inp, self.state
        req = LivenessRequest(
            inp.workspace_id, inp.backend, state.instance_id, state.stale_after_secs, check_instance
        )
        return await local(contract.check_liveness, req)

    async def _check_liveness(self) -> None:
        """The timer fired: confirm from Postgres before acting, re-arm when a beat arrived."""
        stale = self.state.stale_after_secs
        status = self.state.status
        report = await self._liveness_report(check_instance=False)
        last = max(report.last_heartbeat_at or 0.0, self.state.last_beat_at or 0.0)
        now = self._now()
        if now - last < stale:
            self.state.due[Timer.LIVENESS] = last + stale + liveness_slack(stale)
            return
        external = self.inp.backend == "external"
        running = None if external else (await self._liveness_report(check_instance=True)).instance_running
        transition = on_stale(status, external=external, instance_running=running)
        if Timer.LIVENESS in armed(self.state.status):
            self.state.due[Timer.LIVENESS] = now + stale
        if transition is None:
            return
        wrote = await self._set_status(
            transition.status,
            transition.event_type,
            {**transition.payload, "last_heartbeat_at": last or None, "stale_after_secs": stale},
            last_sample_error=transition.payload.get("sample_error"),
            from_statuses=(status,),
        )
        if wrote and transition.status == WorkspaceStatus.OFFLINE:
            await self._restart(
                "auto_restart: heartbeat stale and the instance is not running", None, RESTARTABLE
            )

    def _idle_secs(self) -> float:
        return self.inp.hibernation_idle_minutes * 60.0

    async def _check_idle(self) -> None:
        """Hibernate after `hibernation_idle_minutes` without activity, confirmed from Postgres."""
        status = self.state.status
        report = await local(contract.check_idle, self.inp.workspace_id)
        now = self._now()
        idle = self._idle_secs()
        last_active = report.last_active_at or now
        if report.active_tasks == 0 and now - last_active >= idle:
            self.state.due.pop(Timer.IDLE, None)
            await self._hibernate(f"idle for {self.inp.hibernation_idle_minutes} min", status)
        elif Timer.IDLE in armed(self.state.status):
            self.state.due[Timer.IDLE] = (
                max(last_active + idle, now + 1.0) if report.active_tasks == 0 else now + idle
            )

    # --- agent news -----------------------------------------------------------------------------

    async def _apply_agent_news(self, message: RegisterSignal | HeartbeatSignal) -> None:
        if message.token_id is not None and message.token_id <= self.state.stale_through_token:
            return  # from an instance the workspace moved on from
        transition: Transition | None
        self.state.last_beat_at = self._now()
        status = self.state.status
        if isinstance(message, RegisterSignal):
            transition = on_register(status, message.url, message.agent_card)
        else:
            if message.status_mgmt is not None:
                self.state.status_mgmt = message.status_mgmt
            transition = on_heartbeat(
                status,
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
                from_statuses=(status,),
            )
