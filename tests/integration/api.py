"""Small helpers for talking to the API under test."""

from __future__ import annotations

from typing import Any

import httpx


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "ws")
    response = await client.post("/workspaces", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
