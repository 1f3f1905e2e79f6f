"""The OpenAPI document against the running API (issue 10 items 4 and 5): it validates, every
reference in it resolves, and schemathesis, run over every operation of it against a real API, worker,
PostgreSQL and Temporal, finds no server error and no undocumented status code."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

# A workspace the fuzzer creates is awaiting its agent: the A2A proxy and discover answer it with
# the documented 503 of a target that cannot take traffic yet, a state and not a server fault.
TARGET_NOT_READY = {"workspace_awaiting_agent", "workspace_provisioning", "workspace_offline", "no_url"}


@schemathesis.check
def no_server_fault(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """`not_a_server_error`, except a 503 whose stable code says the target is not ready."""
    if response.status_code == 503:
        try:
            code = json.loads(response.content).get("code")
        except (ValueError, AttributeError):
            code = None
        if code in TARGET_NOT_READY:
            return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_fault,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 6  # per operation, generation mode and workspace choice: a bounded run
SEED = 20261010
# Above UPDATE_REPLY_TIMEOUT_SECONDS (30): an action the workflow is slow to answer is its 503, not a
# client timeout.
PER_REQUEST_TIMEOUT = 60.0
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def stack(make_stack):
    # Workspaces the fuzzer creates fail their start at once instead of launching agent processes.
    return await make_stack(MOLECULE_BACKENDS="external")


async def test_the_document_validates_and_every_reference_resolves(stack):
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        document = (await client.get("/openapi.json")).json()
    validate(document)
    unresolved = [ref for ref in _refs(document) if _resolve(document, ref) is None]
    assert not unresolved, f"references that do not resolve: {sorted(set(unresolved))}"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, reply in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = reply["content"]["application/json"]["schema"]["$ref"]
                    # /state's 404 is the SDK's contract: the state itself, deleted: true.
                    bodies = {"ErrorBody", "ValidationErrorBody", "Health", "WorkspaceState"}
                    assert schema.rsplit("/", 1)[1] in bodies, (
                        method,
                        path,
                        status,
                    )


async def test_a_body_that_is_not_utf8_is_422_like_any_malformed_json(stack):
    # schemathesis found this one: FastAPI answered an undocumented 400 "error parsing the body".
    async with stack.client() as client:
        for path in ("/workspaces", f"/admin/workspaces/{uuid.uuid4()}/bootstrap-failed"):
            response = await client.post(path, content=b'{"name": "\xff\xfe"}', headers=JSON)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "validation_error"
            assert "UTF-8" in response.json()["error"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return None
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# --- schemathesis ---------------------------------------------------------------------------------


@dataclass
class Fuzz:
    base_url: str
    admin_token: str
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    sent: int = 0

    def workspace(self) -> tuple[str, str]:
        """A fresh external workspace (no instance to start): its id and token."""
        response = httpx.post(
            f"{self.base_url}/workspaces",
            json={"name": f"fuzz-{uuid.uuid4().hex[:6]}", "external": True},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=PER_REQUEST_TIMEOUT,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        return created["workspace"]["id"], created["auth_token"]

    def call(self, case: schemathesis.Case, token: str) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        if not case.operation.path.endswith("/events"):
            return case.call(base_url=self.base_url, headers=headers, timeout=PER_REQUEST_TIMEOUT), headers
        # An event stream never ends: take its status and headers, then hang up.
        kwargs = case.as_transport_kwargs(base_url=self.base_url, headers=headers)
        response = requests.request(**kwargs, stream=True, timeout=PER_REQUEST_TIMEOUT)
        try:
            is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
            response._content = b"" if is_stream else response.raw.read()
        finally:
            response.close()
        return response, headers

    def run(self, operation: Any, mode: GenerationMode, aim: str | None) -> None:
        """`aim`: None (ids as generated), "live" (a live workspace) or "unknown" (an unused UUID)."""
        path = operation.path
        registry = path.startswith("/registry/")
        workspace_id, token = self.workspace() if aim == "live" or registry else (None, self.admin_token)
        if aim == "unknown":
            workspace_id = str(uuid.uuid4())
        if not registry:
            token = self.admin_token
        pinned = {"workspace_id": workspace_id} if aim and "{workspace_id}" in path else None
        strategy = operation.as_strategy(mode, path_parameters=pinned)
        label = f"{operation.method.upper()} {path} [{mode.value}{f', {aim} workspace' if aim else ''}]"

        @hypothesis.seed(SEED)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the run stays bounded
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @hypothesis.given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            if aim and registry and isinstance(case.body, dict):
                for key in ("id", "workspace_id"):
                    if key in case.body:
                        case.body[key] = workspace_id
            response, headers = self.call(case, token)
            self.sent += 1
            self.statuses.setdefault(f"{case.method} {path}", set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports an exception group
            self.failures.append(f"{label}:\n{exc}")


def fuzz_all(fuzz: Fuzz, schema: Any) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()
        # Each operation runs with the ids it generates, and again aimed at a live workspace (and,
        # with the id in its path, at an unknown one).
        aims: list[str | None] = [None]
        if operation.path.startswith("/registry/"):
            aims.append("live")
        elif "{workspace_id}" in operation.path:
            aims += ["live", "unknown"]
        raw = operation.definition.raw
        # Negative inputs need something to negate: a parameter or a body.
        negatable = bool(raw.get("parameters") or raw.get("requestBody"))
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negatable else [GenerationMode.POSITIVE]
        for mode in modes:
            for aim in aims:
                fuzz.run(operation, mode, aim)


async def test_schemathesis_finds_no_server_error_and_no_undocumented_status(stack, database_url):
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json")
    fuzz = Fuzz(stack.api_url, stack.admin_token)
    started = time.monotonic()
    try:
        await asyncio.to_thread(fuzz_all, fuzz, schema)
    finally:
        # The fuzzed global secrets would reach every workspace the later tests start.
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM global_secrets")
        finally:
            await conn.close()
    report = json.dumps(
        {
            "sent": fuzz.sent,
            "seconds": round(time.monotonic() - started, 1),
            "statuses": {op: sorted(codes) for op, codes in fuzz.statuses.items()},
        },
        indent=1,
    )
    print(f"schemathesis: {report}")
    assert fuzz.sent > 100, report
    assert not fuzz.failures, "\n\n".join(fuzz.failures) + f"\n\n{report}\n\nAPI log:\n{stack.logs('api')}"
