from __future__ import annotations

from backends.base import InstanceSpec, ManagedInstance, RescueMaterial


class ExternalProvisioner:
    """The agent runs off-host and registers itself: there is nothing to start or stop."""

    name = "external"

    async def start(self, spec: InstanceSpec) -> str | None:
        return None

    async def stop(self, instance_id: str) -> None:
        return None

    async def is_running(self, instance_id: str) -> bool:
        return False

    async def remove_volumes(self, workspace_id: str) -> None:
        return None

    async def rescue_material(self, workspace_id: str, instance_id: str | None) -> RescueMaterial:
        return RescueMaterial({"note": "external agent: no instance is managed by the platform"})

    async def list_managed(self, workspace_id: str | None = None) -> list[ManagedInstance]:
        return []

    async def list_volume_owners(self) -> list[str]:
        return []
