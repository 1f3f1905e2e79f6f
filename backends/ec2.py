"""Workspaces as EC2 instances (boto3, blocking: every call runs off the event loop)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backends.base import (
    BackendConfigError,
    BackendError,
    BackendNotConfigured,
    InstanceSpec,
    ManagedInstance,
    RescueMaterial,
    agent_environment,
    parse_generation,
    refuse_if_newer,
)

T = TypeVar("T")

TAG_WORKSPACE = "molecule:workspace-id"
TAG_MANAGED = "molecule:managed"
TAG_PLATFORM = "molecule:platform-instance"
TAG_GENERATION = "molecule:generation"
CONFIG_PATH = "/etc/molecule"
_GONE_CODES = frozenset({"InvalidInstanceID.NotFound"})
_LIVE_STATES = ("pending", "running", "stopping", "stopped")
_CONSOLE_TAIL = 200


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass
class Ec2Options:
    region: str | None
    platform_url: str
    endpoint_url: str | None = None
    ami_id: str | None = None
    instance_type: str = "t3.small"
    subnet_id: str | None = None
    security_group_ids: list[str] = field(default_factory=list)


def client_token(workspace_id: str, generation: int, token: str) -> str:
    """EC2's idempotency key, one per launch attempt: each attempt mints a new instance token, so a
    retried attempt must get a new VM (an idempotent replay would return one holding a revoked token).
    Within an attempt, botocore's own retry of a lost reply still finds the same instance."""
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"{workspace_id}-g{generation}-{fingerprint}"


def user_data(spec: InstanceSpec, platform_url: str, command: list[str]) -> str:
    """A boot script that writes the token file, exports the env and starts the agent."""
    env = agent_environment(spec, platform_url, CONFIG_PATH)
    lines = [
        "#!/bin/bash",
        "set -euo pipefail",
        f"install -d -m 0700 {CONFIG_PATH}",
        "umask 077",
        f"printf '%s' {shlex.quote(spec.token)} > {CONFIG_PATH}/.auth_token",
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
        f"exec {shlex.join(command)}",
    ]
    return "\n".join(lines) + "\n"


class Ec2Provisioner:
    name = "ec2"

    def __init__(self, platform_id: str, options: Ec2Options) -> None:
        self.platform_id = platform_id
        self.options = options
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                if not self.options.region:
                    raise BackendNotConfigured("the ec2 backend is not configured: set EC2_REGION")
                # One quick retry in botocore; the activity retry policy owns the rest, with backoff.
                config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=5)
                self._client = boto3.client(
                    "ec2",
                    region_name=self.options.region,
                    endpoint_url=self.options.endpoint_url,
                    config=config,
                )
            return self._client

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except BackendError:
            raise
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidParameterValue"):
                raise BackendConfigError(f"ec2: {exc}") from exc
            raise BackendError(f"ec2: {exc}") from exc  # throttling, 5xx, auth: the retry policy decides
        except BotoCoreError as exc:
            raise BackendError(f"ec2: {exc}") from exc

    def _filters(self, workspace_id: str | None = None) -> list[dict[str, Any]]:
        filters = [
            {"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
            {"Name": f"tag:{TAG_PLATFORM}", "Values": [self.platform_id]},
            {"Name": "instance-state-name", "Values": list(_LIVE_STATES)},
        ]
        if workspace_id:
            filters.append({"Name": f"tag:{TAG_WORKSPACE}", "Values": [workspace_id]})
        return filters

    def _instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for page in self.client().get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                found.extend(reservation["Instances"])
        return found

    @staticmethod
    def _managed(instance: dict[str, Any]) -> ManagedInstance:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        return ManagedInstance(
            str(instance["InstanceId"]),
            tags.get(TAG_WORKSPACE, ""),
            instance.get("LaunchTime"),
            parse_generation(tags.get(TAG_GENERATION)),
        )

    async def start(self, spec: InstanceSpec) -> str | None:
        template = spec.template
        ami = (template.ami if template else None) or self.options.ami_id
        if not ami:
            raise BackendNotConfigured("the ec2 backend has no AMI: set EC2_AMI_ID or `ami:` in the template")
        command = (template.command if template else None) or ["python3", "-m", "agent"]
        command = ["python3" if part == "{python}" else part for part in command]
        instance_type = (template.instance_type if template else None) or self.options.instance_type
        return await self._run(lambda: self._start_sync(spec, ami, instance_type, command))

    def _start_sync(self, spec: InstanceSpec, ami: str, instance_type: str, command: list[str]) -> str:
        client = self.client()
        # One instance per workspace: a repeated start (an activity retry, whose token revoked the one
        # an earlier VM was given) or a new generation replaces whatever this workspace has.
        existing = self._instances(self._filters(spec.workspace_id))
        refuse_if_newer([self._managed(i) for i in existing], spec.generation)
        for instance in existing:
            self._terminate_sync(instance["InstanceId"])
        new_tags = [
            {"Key": TAG_WORKSPACE, "Value": spec.workspace_id},
            {"Key": TAG_MANAGED, "Value": "true"},
            {"Key": TAG_PLATFORM, "Value": self.platform_id},
            {"Key": TAG_GENERATION, "Value": str(spec.generation)},
            {"Key": "Name", "Value": f"ws-{spec.workspace_id[:12]}"},
        ]
        kwargs: dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(spec.workspace_id, spec.generation, spec.token),
            "UserData": user_data(spec, self.options.platform_url, command),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": new_tags},
                {"ResourceType": "volume", "Tags": new_tags},
            ],
        }
        if self.options.subnet_id:
            kwargs["SubnetId"] = self.options.subnet_id
        if self.options.security_group_ids:
            kwargs["SecurityGroupIds"] = self.options.security_group_ids
        reply = client.run_instances(**kwargs)
        return str(reply["Instances"][0]["InstanceId"])

    def _terminate_sync(self, instance_id: str) -> None:
        try:
            self.client().terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _error_code(exc) in _GONE_CODES:
                return  # never existed or long gone
            raise

    async def stop(self, instance_id: str) -> None:
        await self._run(lambda: self._terminate_sync(instance_id))

    async def is_running(self, instance_id: str) -> bool:
        def running() -> bool:
            try:
                reply = self.client().describe_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if _error_code(exc) in _GONE_CODES:
                    return False
                raise
            states = [i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]]
            return any(state in ("pending", "running") for state in states)

        return await self._run(running)

    async def remove_volumes(self, workspace_id: str) -> None:
        # Root volumes are deleted on termination (DeleteOnTermination, the AMI default).
        return None

    async def rescue_material(self, workspace_id: str, instance_id: str | None) -> RescueMaterial:
        def collect() -> RescueMaterial:
            if not instance_id:
                return RescueMaterial({"state": "no instance"})
            client = self.client()
            try:
                reply = client.describe_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if _error_code(exc) in _GONE_CODES:
                    return RescueMaterial({"state": "instance not found"})
                raise
            instance = reply["Reservations"][0]["Instances"][0]
            state = instance["State"]["Name"]
            reason = instance.get("StateReason", {}).get("Message")
            output = client.get_console_output(InstanceId=instance_id).get("Output") or ""
            try:
                output = base64.b64decode(output, validate=True).decode(errors="replace")
            except ValueError:
                pass  # some endpoints return it decoded already
            tail = "\n".join(output.splitlines()[-_CONSOLE_TAIL:])
            return RescueMaterial({"state": f"{state}: {reason}" if reason else state, "console": tail})

        return await self._run(collect)

    async def list_managed(self, workspace_id: str | None = None) -> list[ManagedInstance]:
        def listing() -> list[ManagedInstance]:
            return [self._managed(i) for i in self._instances(self._filters(workspace_id))]

        return await self._run(listing)

    async def list_volume_owners(self) -> list[str]:
        return []  # root volumes go with their instance (DeleteOnTermination)
