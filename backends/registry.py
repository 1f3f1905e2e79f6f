from __future__ import annotations

from backends.base import BackendNotConfigured, Provisioner
from backends.docker import DockerOptions, DockerProvisioner
from backends.ec2 import Ec2Options, Ec2Provisioner
from backends.external import ExternalProvisioner
from backends.process import ProcessProvisioner
from config.settings import Settings


def build_provisioner(name: str, settings: Settings) -> Provisioner:
    """One backend from Settings. Construction never contacts a daemon or a cloud API."""
    platform_id = settings.platform_id()
    if name == "process":
        return ProcessProvisioner(settings.data_dir, platform_id, nice=settings.process_agent_nice)
    if name == "external":
        return ExternalProvisioner()
    if name == "docker":
        return DockerProvisioner(
            platform_id,
            DockerOptions(
                platform_url=settings.docker_platform_url or settings.platform_url,
                network=settings.docker_network,
                allow_privileged=settings.docker_allow_privileged,
                tier_overrides=settings.tier_overrides(),
            ),
        )
    if name == "ec2":
        return Ec2Provisioner(
            platform_id,
            Ec2Options(
                region=settings.ec2_region,
                platform_url=settings.ec2_platform_url or settings.platform_url,
                endpoint_url=settings.ec2_endpoint_url,
                ami_id=settings.ec2_ami_id,
                instance_type=settings.ec2_instance_type,
                subnet_id=settings.ec2_subnet_id,
                security_group_ids=settings.ec2_security_group_ids,
            ),
        )
    raise BackendNotConfigured(f"unknown backend {name!r}")


class Backends:
    """The provisioners this worker drives (MOLECULE_BACKENDS), built once from Settings."""

    def __init__(self, settings: Settings) -> None:
        self._by_name: dict[str, Provisioner] = {
            name: build_provisioner(name, settings) for name in dict.fromkeys(settings.molecule_backends)
        }

    def replace(self, provisioner: Provisioner) -> None:
        """Swap in another provisioner under its name (the chaos suite wraps one to inject faults)."""
        self._by_name[provisioner.name] = provisioner

    def items(self) -> list[tuple[str, Provisioner]]:
        return list(self._by_name.items())

    def get(self, name: str) -> Provisioner:
        try:
            return self._by_name[name]
        except KeyError:
            enabled = ",".join(self._by_name)
            raise BackendNotConfigured(
                f"backend {name!r} is not enabled on this worker (MOLECULE_BACKENDS={enabled})"
            ) from None
