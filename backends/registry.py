from __future__ import annotations

from backends.base import BackendNotConfigured, Provisioner
from backends.external import ExternalProvisioner
from backends.process import ProcessProvisioner
from molecule.settings import Settings


class Backends:
    """The provisioners this worker can drive, built once from Settings."""

    def __init__(self, settings: Settings) -> None:
        self._by_name: dict[str, Provisioner] = {
            "process": ProcessProvisioner(
                settings.data_dir, settings.platform_id(), nice=settings.process_agent_nice
            ),
            "external": ExternalProvisioner(),
        }

    def get(self, name: str) -> Provisioner:
        try:
            return self._by_name[name]
        except KeyError:
            raise BackendNotConfigured(
                f"backend {name!r} is not configured on this worker (available: {', '.join(self._by_name)})"
            ) from None

    def register(self, provisioner: Provisioner) -> None:
        self._by_name[provisioner.name] = provisioner
