"""How workflows call their short store activities: one timeout and retry policy for each kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

A = TypeVar("A")
R = TypeVar("R")

DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
_STORE_TIMEOUT = timedelta(seconds=30)


async def store(stub: Callable[[A], Awaitable[R]], arg: A) -> R:
    """A store read or write as an activity, retried until Postgres answers."""
    return await workflow.execute_activity(
        stub, arg, start_to_close_timeout=_STORE_TIMEOUT, retry_policy=DB_RETRY
    )


async def local(stub: Callable[[A], Awaitable[R]], arg: A) -> R:
    """The same as a local activity: one workflow task, for answers inside an update or a timer."""
    return await workflow.execute_local_activity(
        stub, arg, start_to_close_timeout=_STORE_TIMEOUT, retry_policy=LOCAL_RETRY
    )


def failure_type(err: ActivityError) -> str | None:
    """The `ApplicationError.type` an activity failed with (domain.contract.ActivityErrorType)."""
    return err.cause.type if isinstance(err.cause, ApplicationError) else None


def failure_detail(err: ActivityError) -> str:
    """The activity's own (already redacted) words, for evidence, never for events."""
    return err.cause.message if isinstance(err.cause, ApplicationError) else ""
