from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from domain.json_bounds import UNREADABLE

log = logging.getLogger("molecule.store")


def _decode_json(text: str) -> Any:
    """jsonb as Python. A stored value Python cannot decode (nested past the recursion limit, an
    integer past its digit limit) comes back as a note rather than failing the whole query."""
    try:
        return json.loads(text)
    except (RecursionError, ValueError) as exc:
        log.warning("a stored jsonb value cannot be decoded (%s); served as unreadable", type(exc).__name__)
        return {UNREADABLE: f"stored value cannot be decoded ({type(exc).__name__})"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=_decode_json, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # Pooled connections never hold session state (LISTEN and advisory locks use dedicated
    # connections), so skip asyncpg's default reset query: a second round trip on every release.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset_connection,
        **kwargs,
    )
    assert pool is not None
    return pool
