"""The workflow contract in domain/ is the one list of activity names: the worker's implementations
and the workflow tests' fakes register exactly the stubs' names, with the stubs' types."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from temporalio.activity import _Definition

from activities.a2a import A2AActivities
from activities.cascade import CascadeActivities
from activities.reconcile import ReconcileActivities
from activities.workspace import WorkspaceActivities
from domain import contract
from tests.workflows.fakes import FakeActivities


def name(fn: Callable[..., Any]) -> str:
    definition = _Definition.must_from_callable(fn)
    assert definition.name is not None
    return definition.name


def worker_activities() -> list[Callable[..., Any]]:
    workspace = WorkspaceActivities.__new__(WorkspaceActivities)
    cascade = CascadeActivities.__new__(CascadeActivities)
    reconcile = ReconcileActivities.__new__(ReconcileActivities)
    a2a = A2AActivities.__new__(A2AActivities)
    return [
        *WorkspaceActivities.all(workspace),
        *CascadeActivities.all(cascade),
        reconcile.reconcile,
        *A2AActivities.all(a2a),
    ]


def fake_activities() -> list[Callable[..., Any]]:
    return FakeActivities.all(FakeActivities.__new__(FakeActivities))


def test_the_three_name_sets_are_equal() -> None:
    stubs = {name(s) for s in contract.ACTIVITY_STUBS}
    assert len(stubs) == len(contract.ACTIVITY_STUBS), "two stubs share a name"
    assert {name(a) for a in worker_activities()} == stubs
    assert {name(a) for a in fake_activities()} == stubs


def _types(fn: Callable[..., Any]) -> tuple[list[Any], Any]:
    hints = get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    return [hints[p] for p in params], hints["return"]


def test_implementations_take_and_return_the_stub_types() -> None:
    stubs = {name(s): s for s in contract.ACTIVITY_STUBS}
    for impl in [*worker_activities(), *fake_activities()]:
        assert _types(impl) == _types(stubs[name(impl)]), name(impl)


def test_update_rejections_are_the_contracts_rejection_types() -> None:
    from domain.status import WorkspaceStatus
    from domain.transitions import update_rejection

    cases = [
        (contract.Update.PAUSE, WorkspaceStatus.ONLINE, {"removed": True}, contract.Rejection.REMOVED),
        (contract.Update.RESTART, WorkspaceStatus.ONLINE, {"external": True}, contract.Rejection.EXTERNAL),
        (contract.Update.RESUME, WorkspaceStatus.ONLINE, {}, contract.Rejection.INVALID_STATE),
        (contract.Update.HIBERNATE, WorkspaceStatus.PAUSED, {}, contract.Rejection.INVALID_STATE),
    ]
    for update, status, flags, expected in cases:
        kw = {"removed": False, "external": False, "restart_pending": False} | flags
        rejection = update_rejection(update, status, **kw)
        assert rejection is not None and rejection[0] == expected, (update, rejection)
    accepted = {"removed": False, "external": False, "restart_pending": False}
    assert update_rejection(contract.Update.RESUME, WorkspaceStatus.PAUSED, **accepted) is None
    assert update_rejection(contract.Update.HIBERNATE, WorkspaceStatus.ONLINE, **accepted) is None
