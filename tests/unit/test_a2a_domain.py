"""How the proxy reads the clients' request shapes and the agents' answers."""

from __future__ import annotations

import pytest

from domain.a2a import (
    InvalidA2ARequest,
    declares_native_session,
    has_inbound_url,
    normalise,
    response_text,
    rpc_error,
    target_refusal,
)
from domain.redaction import Redactor, redact_json


def test_a_full_envelope_keeps_its_id_and_message_id() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": "r1",
        "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "hi"}]}},
    }
    request = normalise(body)
    assert (request.method, request.message_id, request.body["id"]) == ("message/send", "m1", "r1")
    assert request.body["params"]["message"]["parts"] == [{"kind": "text", "text": "hi"}]


def test_the_runtimes_bare_self_message_is_wrapped_and_given_a_message_id() -> None:
    """The runtime's heartbeat self-message: no jsonrpc, no id, legacy `type` parts, no messageId."""
    request = normalise(
        {"method": "message/send", "params": {"message": {"parts": [{"type": "text", "text": "x"}]}}}
    )
    assert request.body["jsonrpc"] == "2.0" and request.body["id"]
    assert request.message_id and request.body["params"]["message"]["messageId"] == request.message_id
    assert request.body["params"]["message"]["role"] == "user"


def test_other_methods_pass_through() -> None:
    request = normalise({"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {"id": "t1"}})
    assert request.body == {"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {"id": "t1"}}
    assert request.message_id is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "JSON-RPC 2.0 object"),
        ({"jsonrpc": "2.1", "method": "m"}, '"jsonrpc" must be "2.0"'),
        ({"jsonrpc": "2.0"}, '"method" is required'),
        ({"method": "  "}, '"method" is required'),
        ({"method": "m", "id": True}, '"id" must be'),
        ({"method": "m", "params": "x"}, '"params" must be'),
        ({"method": "message/send"}, '"params.message"'),
        ({"method": "message/send", "params": {"message": {"parts": "x"}}}, "non-empty array"),
        ({"method": "message/send", "params": {"message": {"parts": ["x"]}}}, "must be an object"),
        ({"method": "message/send", "params": {"message": {"parts": [{}], "messageId": 5}}}, "messageId"),
    ],
)
def test_invalid_bodies_name_the_problem(body: object, problem: str) -> None:
    with pytest.raises(InvalidA2ARequest, match=problem.replace("[", r"\[")):
        normalise(body)


def test_answer_text_reads_artifacts_then_message_parts() -> None:
    answer = {
        "result": {
            "artifacts": [{"parts": [{"kind": "text", "text": "a1"}, {"kind": "data", "data": {}}]}],
            "parts": [{"kind": "text", "text": "p1"}, {"type": "text", "text": "p2"}],
        }
    }
    assert response_text(answer) == "a1\np1\np2"
    assert response_text({"error": {"message": "boom"}}) is None
    assert rpc_error({"error": {"code": -1, "message": "boom"}}) == "boom"
    assert rpc_error(answer) is None


def test_capabilities_and_urls() -> None:
    assert declares_native_session({"session": True}) and declares_native_session(
        {"provides_native_session": True}
    )
    assert not declares_native_session({"session": "yes"}) and not declares_native_session(None)
    assert (
        has_inbound_url("http://a")
        and not has_inbound_url("remote://no-inbound")
        and not has_inbound_url(None)
    )


@pytest.mark.parametrize(
    ("status", "url", "removed", "http", "code"),
    [
        ("online", "http://a", False, None, None),
        ("degraded", "http://a", False, None, None),
        ("online", None, False, 503, "no_url"),
        ("online", "remote://no-inbound", False, 503, "no_url"),
        ("failed", "http://a", False, 503, "workspace_failed"),
        ("paused", "http://a", False, 409, "workspace_paused"),
        ("hibernated", None, False, 503, "waking"),
        ("online", "http://a", True, 410, "workspace_removed"),
        ("provisioning", None, False, 503, "workspace_provisioning"),
    ],
)
def test_target_states(
    status: str, url: str | None, removed: bool, http: int | None, code: str | None
) -> None:
    refusal = target_refusal(status, url, removed)
    assert (refusal.http_status if refusal else None, refusal.code if refusal else None) == (http, code)
    if status == "hibernated":
        assert refusal is not None and refusal.wake and refusal.retry_after == 15


def test_bodies_in_logs_are_redacted_and_stay_json() -> None:
    body = {"params": {"api_key": "abc123", "text": "token sk-ant-" + "x" * 30, "n": [{"password": 5}]}}
    redacted = redact_json(body, Redactor())
    assert redacted == {
        "params": {"api_key": "[REDACTED]", "text": "token [REDACTED]", "n": [{"password": "[REDACTED]"}]}
    }
