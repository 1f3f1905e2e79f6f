"""Rescue bundles: what an operator needs to debug a failed boot, with every secret masked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
import yaml

from backends.base import BackendError
from backends.registry import Backends
from config.templates import TemplateCatalog
from domain.events import EventType
from domain.models import RescueRequest
from domain.redaction import MASK, Redactor, redact_sections
from store import events as event_store
from store import rescue as rescue_store
from store import secrets as secret_store
from store.keyring import Keyring

log = logging.getLogger("molecule.rescue")

RedactorFactory = Callable[[asyncpg.Pool, str], Awaitable[Redactor | None]]

# This workspace's redactor, or None when its secrets cannot be read (then: no bundle). The same one
# the API applies to a boot watcher's log tail, so it lives in the store, below both.
redactor_for = rescue_store.redactor_for


async def capture_rescue_bundle(
    pool: asyncpg.Pool,
    backends: Backends,
    templates: TemplateCatalog,
    req: RescueRequest,
    make_redactor: RedactorFactory,
    keyring: Keyring,
) -> bool:
    """Collect, redact and store the bundle. False (and nothing stored) without a redactor."""
    redactor = await make_redactor(pool, req.workspace_id)
    sections: dict[str, str] = {
        "verdict": req.reason,
        "instance": f"backend={req.backend} instance_id={req.instance_id} generation={req.generation}",
    }
    try:
        material = await backends.get(req.backend).rescue_material(req.workspace_id, req.instance_id)
        sections.update({f"backend.{name}": text for name, text in material.sections.items()})
    except BackendError as exc:
        sections["backend.error"] = str(exc)
    template = templates.for_workspace(req.template, req.runtime)
    sections["template_config"] = (
        yaml.safe_dump(template.model_dump(mode="json"), sort_keys=False) if template else ""
    )
    values, unreadable = await secret_store.readable_values(pool, keyring, req.workspace_id)
    env_names = sorted(set(values) | unreadable)
    sections["env"] = "".join(f"{name}={MASK}\n" for name in env_names)
    if req.log_tail:
        sections["log_tail"] = req.log_tail
    if req.detail:
        sections["start_error"] = req.detail

    redacted = redact_sections(sections, redactor)
    async with pool.acquire() as conn:
        if redacted is None:
            # Fail closed: evidence that might carry a secret is never stored.
            await event_store.insert_event(
                conn,
                EventType.WORKSPACE_RESCUE_CAPTURED,
                req.workspace_id,
                {"captured": False, "reason": "redaction unavailable", "generation": req.generation},
                dedupe_key=f"rescue:{req.workspace_id}:{req.generation}:{req.reason}",
            )
            return False
        await rescue_store.insert_bundle(pool, req.workspace_id, req.generation, req.reason, redacted)
        await event_store.insert_event(
            conn,
            EventType.WORKSPACE_RESCUE_CAPTURED,
            req.workspace_id,
            {
                "captured": True,
                "sections": sorted(redacted),
                "generation": req.generation,
                "verdict": req.reason,
            },
            dedupe_key=f"rescue:{req.workspace_id}:{req.generation}:{req.reason}",
        )
    return True
