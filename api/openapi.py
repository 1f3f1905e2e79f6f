"""The OpenAPI document's error replies, declared in one place: `errors(404, 410)` is the `responses=`
of a route (or a router) that can answer those statuses, each with the one error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.schemas import ErrorBody, ValidationErrorBody

_WHY = {
    400: "a malformed workspace id or parameter",
    401: "a missing or invalid bearer token",
    403: "the token belongs to another workspace",
    404: "no such workspace (or no such resource of it)",
    409: "the action conflicts with the workspace's state (or its workflow is no longer running)",
    410: "the workspace was removed",
    413: "the request body is over the size limit",
    422: "an invalid body or parameter (`fields` names each)",
    429: "too many failed authentications from this address; retry after `Retry-After` seconds",
    502: "the workflow orchestrator refused the call (or a cascade workflow failed)",
    503: "PostgreSQL or Temporal is unavailable, or the workflow did not answer in time; retry shortly",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until this address may authenticate again",
        "schema": {"type": "integer"},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        reply: dict[str, Any] = {
            "model": ValidationErrorBody if status == 422 else ErrorBody,
            "description": _WHY[status],
        }
        if status == 429:
            reply["headers"] = _RETRY_AFTER
        responses[status] = reply
    return responses


# Authenticated routes: a bad token, the per-address limit on failed authentication, a body or
# parameter that does not validate, and PostgreSQL or Temporal being down.
AUTHENTICATED = errors(401, 422, 429, 503)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place: a hand-built requestBody has
    no `$defs` to point into (a `#/$defs/...` ref does not resolve inside an OpenAPI document)."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"{model.__name__}: recursive model {name} cannot be inlined")
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return resolve({**defs[name], **rest}, seen | {name})
        return {key: resolve(value, seen) for key, value in node.items()}

    resolved: dict[str, Any] = resolve(schema, frozenset())
    return resolved
