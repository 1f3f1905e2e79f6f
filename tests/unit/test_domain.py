from __future__ import annotations

import logging
from typing import Any

import pytest

from config.settings import Settings
from domain.runtimes import normalize_runtime
from domain.status import WorkspaceStatus
from domain.templates import Template, missing_required_env
from domain.timeouts import manifest_timeout, resolve_provision_timeout
from domain.transitions import heartbeat_is_news, on_heartbeat, on_register


@pytest.mark.parametrize(
    ("runtime", "env", "manifest", "expected"),
    [
        ("claude-code", None, None, (720, "default")),
        ("hermes", None, None, (1800, "runtime_default")),
        ("claude-code", None, 1200, (1200, "manifest")),
        ("hermes", None, 900, (900, "manifest")),
        ("hermes", 60, 900, (60, "env")),
        ("codex", 60, None, (60, "env")),
        ("codex", 0, None, (720, "default")),
        ("openclaw", -4, 30, (30, "manifest")),
    ],
)
def test_deadline_resolution_order(runtime, env, manifest, expected):
    resolved = resolve_provision_timeout(runtime, env, manifest)
    assert (resolved.seconds, resolved.source) == expected


def test_manifest_timeout_is_the_max_of_valid_values():
    assert manifest_timeout([600, None, 1200, -3, True, "900"]) == 1200
    assert manifest_timeout([None]) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hermes", ("hermes", False)),
        ("  Codex ", ("codex", False)),
        ("", ("claude-code", True)),
        (None, ("claude-code", True)),
        ("gpt-bot", ("claude-code", True)),
        ("external", ("external", False)),
    ],
)
def test_runtime_allowlist(given, expected):
    assert normalize_runtime(given) == expected


def test_required_env_preflight():
    template = Template.model_validate(
        {"name": "t", "runtime": "codex", "runtime_config": {"required_env": ["A", "B", "C"]}}
    )
    assert missing_required_env(template, {"A": "x", "B": "   "}) == ["B", "C"]
    assert missing_required_env(None, {}) == []


@pytest.mark.parametrize(
    ("var", "value", "default"),
    [
        ("PROVISION_TIMEOUT_SECONDS", "soon", None),
        ("REMOTE_LIVENESS_STALE_AFTER", "-1", 180),
        ("REMOTE_LIVENESS_STALE_AFTER", "abc", 180),
        ("MOLECULE_ENV", "staging", "production"),
    ],
)
def test_malformed_settings_log_variable_value_and_default(monkeypatch, caplog, var, value, default):
    monkeypatch.setenv(var, value)
    with caplog.at_level(logging.WARNING, "molecule.settings"):
        settings = Settings()
    field = {"MOLECULE_ENV": "molecule_env"}.get(var, var.lower())
    assert getattr(settings, field) == default
    assert f"{var}={value!r}" in caplog.text
    assert f"using default {default!r}" in caplog.text


def test_register_recovers_every_agent_recoverable_status():
    for status in ("provisioning", "failed", "awaiting_agent", "offline", "degraded"):
        transition = on_register(status, "http://a", None)
        assert transition is not None and transition.status == WorkspaceStatus.ONLINE
    assert on_register("online", "http://a", None) is None
    for frozen in ("removed", "paused", "hibernated", "hibernating"):
        assert on_register(frozen, "http://a", None) is None


def beat(status, **kw):
    args = {"error_rate": 0.0, "sample_error": None, "runtime_state": "", "status_mgmt": False} | kw
    return on_heartbeat(status, **args)


def test_heartbeat_rules():
    assert beat("failed").status == WorkspaceStatus.ONLINE
    assert beat("failed").payload == {"recovered_from": "failed"}
    assert beat("online", runtime_state="wedged").status == WorkspaceStatus.DEGRADED
    assert beat("online", runtime_state="wedged", status_mgmt=True).status == WorkspaceStatus.DEGRADED
    assert beat("online", error_rate=0.5).status == WorkspaceStatus.DEGRADED
    assert beat("online", error_rate=0.5, status_mgmt=True) is None
    assert beat("online", error_rate=0.2) is None
    assert beat("degraded", error_rate=0.05).status == WorkspaceStatus.ONLINE
    assert beat("degraded", error_rate=0.05, runtime_state="busy") is None
    assert beat("degraded", error_rate=0.05, status_mgmt=True) is None
    assert beat("removed") is None
    assert beat("paused") is None


def test_steady_heartbeats_are_not_news():
    steady: dict[str, Any] = {
        "status": "online",
        "first_since_register": False,
        "prev_runtime_state": "",
        "runtime_state": "",
        "prev_error_rate": 0.0,
        "error_rate": 0.05,
        "capabilities_changed": False,
    }
    assert not heartbeat_is_news(**steady)
    assert heartbeat_is_news(**steady | {"first_since_register": True})
    assert heartbeat_is_news(**steady | {"error_rate": 0.1})
    assert heartbeat_is_news(**steady | {"prev_error_rate": 0.6, "error_rate": 0.4})
    assert heartbeat_is_news(**steady | {"runtime_state": "wedged"})
    assert heartbeat_is_news(**steady | {"capabilities_changed": True})
    assert heartbeat_is_news(**steady | {"status": "provisioning"})
    assert not heartbeat_is_news(**steady | {"status": "degraded", "error_rate": 0.3, "prev_error_rate": 0.4})


def must(transition):
    assert transition is not None
    return transition


def test_stale_rules_by_backend_and_status():
    from domain.transitions import HEARTBEAT_STALE, on_stale

    assert (
        must(on_stale("online", external=True, instance_running=None)).status
        == WorkspaceStatus.AWAITING_AGENT
    )
    assert (
        must(on_stale("degraded", external=True, instance_running=None)).status
        == WorkspaceStatus.AWAITING_AGENT
    )
    silent = must(on_stale("online", external=False, instance_running=True))
    assert silent.status == WorkspaceStatus.DEGRADED and silent.payload["sample_error"] == HEARTBEAT_STALE
    assert on_stale("degraded", external=False, instance_running=True) is None
    assert must(on_stale("online", external=False, instance_running=False)).status == WorkspaceStatus.OFFLINE
    for status in ("paused", "hibernated", "hibernating", "removed", "failed", "provisioning", "offline"):
        for external, running in ((True, None), (False, False), (False, True)):
            assert on_stale(status, external=external, instance_running=running) is None, status


def test_a_beat_that_would_recover_a_degraded_workspace_is_news():
    base: dict[str, Any] = {
        "first_since_register": False,
        "prev_runtime_state": "",
        "runtime_state": "",
        "prev_error_rate": 0.0,
        "error_rate": 0.0,
        "capabilities_changed": False,
    }
    # Degraded by a stale heartbeat, now beating healthily: the workflow must hear it.
    assert heartbeat_is_news(status="degraded", **base)
    assert not heartbeat_is_news(status="degraded", **base, status_mgmt=True)
    assert not heartbeat_is_news(status="removed", **base)
    assert not heartbeat_is_news(status="paused", **base)


def test_liveness_slack_keeps_checks_under_the_history_budget():
    from domain.transitions import liveness_slack

    # ~6 history events per check; a healthy workspace beating every 30 s is checked about every
    # (stale + slack - 15 s): at the default window that is <= 100 events an hour.
    interval = 180 + liveness_slack(180) - 15
    assert 6 * 3600 / interval <= 100
