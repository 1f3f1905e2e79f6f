"""EC2-backed workspaces through the workflow, against moto's EC2 server: the instance carries the
tags and user-data, and a terminate that meets throttling and 5xx is retried until it succeeds."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from temporalio.client import Client

from activities.workspace import WorkspaceActivities
from backends.ec2 import Ec2Provisioner
from backends.registry import Backends
from config.settings import Settings
from config.templates import TemplateCatalog
from store.db import create_pool
from store.keyring import load_keyring
from tests.integration.api import bearer, create
from tests.integration.conftest import Stack
from tests.integration.sse import EventStream
from workers.main import build_worker

pytestmark = pytest.mark.integration

AMI = "ami-12c6146b"
THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>"
)
UNAVAILABLE = (
    b"<Response><Errors><Error><Code>Unavailable</Code>"
    b"<Message>Service unavailable.</Message></Error></Errors><RequestID>x</RequestID></Response>"
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class TerminateFaults:
    """A botocore `before-send` hook: the first calls to TerminateInstances get these replies."""

    def __init__(self, replies: list[tuple[int, bytes]]) -> None:
        self.replies = list(replies)
        self.calls = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.calls += 1
        if not self.replies:
            return None  # let it through to the server
        status, body = self.replies.pop(0)
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(body))


def ec2_tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


async def test_ec2_workspace_launches_tagged_and_terminate_is_retried(
    database_url, temporal_address, moto_endpoint, tmp_path
):
    stack = Stack(database_url, temporal_address, tmp_path, {"A2A_ALLOW_PRIVATE_NETWORKS": "true"})
    settings = Settings.model_validate(
        {
            "database_url": database_url,
            "temporal_address": temporal_address,
            "task_queue": stack.task_queue,
            "platform_url": stack.api_url,
            "remote_liveness_stale_after": 2,
            "molecule_backends": ["ec2"],
            "ec2_region": "us-east-1",
            "ec2_endpoint_url": moto_endpoint,
            "ec2_ami_id": AMI,
            "MOLECULE_DATA_DIR": tmp_path / "worker",
            "MOLECULE_PLATFORM_INSTANCE": stack.platform_id,
        }
    )
    backends = Backends(settings)
    provisioner = backends.get("ec2")
    assert isinstance(provisioner, Ec2Provisioner)
    # Two 503s (one activity attempt: botocore's own retry too), then throttling, then through.
    faults = TerminateFaults([(503, UNAVAILABLE), (503, UNAVAILABLE), (400, THROTTLED)])
    provisioner.client().meta.events.register("before-send.ec2.TerminateInstances", faults)
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint)

    pool = await create_pool(database_url)
    temporal = await Client.connect(temporal_address)
    # The API (the stack's data dir) seals create's env: the worker must hold the same key.
    keyring = load_keyring(None, tmp_path)
    activities = WorkspaceActivities(
        pool, settings, backends, TemplateCatalog(settings.templates_dir), keyring
    )
    await stack.start_api()
    try:
        async with build_worker(temporal, activities, stack.task_queue), stack.client() as client:
            async with EventStream(client) as events:
                created = await create(client, runtime="claude-code", backend="ec2", env={"PLAIN": "1"})
                workspace_id = created["workspace"]["id"]
                first = await events.wait_type("WORKSPACE_PROVISIONING", workspace_id)
                instance_id = first["payload"]["instance_id"]

                described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
                    0
                ]
                assert described["ImageId"] == AMI
                assert described["State"]["Name"] == "running"
                tags = ec2_tags(described)
                assert tags["molecule:workspace-id"] == workspace_id
                assert tags["molecule:managed"] == "true"
                assert tags["molecule:platform-instance"] == stack.platform_id
                script = base64.b64decode(
                    ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"][
                        "Value"
                    ]
                ).decode()
                assert f"export WORKSPACE_ID={workspace_id}" in script
                assert f"export PLATFORM_URL={stack.api_url}" in script
                assert "export PLAIN=1" in script
                assert script.rstrip().endswith("exec python3 -m agent")

                # Play the agent the instance would run: register with the token from user-data.
                token = re.search(r"printf '%s' (\S+) >", script).group(1)  # type: ignore[union-attr]
                async with httpx.AsyncClient(base_url=stack.api_url) as agent:
                    body = {"id": workspace_id, "url": "http://10.0.0.5:8000", "agent_card": {"name": "vm"}}
                    reply = await agent.post("/registry/register", json=body, headers=bearer(token))
                    assert reply.status_code == 200, reply.text
                await events.wait_type("WORKSPACE_ONLINE", workspace_id)

                # The VM dies and the agent goes silent: liveness → offline → auto-restart, whose
                # terminate meets the injected faults and is retried until it goes through.
                ec2.stop_instances(InstanceIds=[instance_id])
                await events.wait_type("WORKSPACE_OFFLINE", workspace_id, timeout=60)
                second = await events.wait_for(
                    lambda e: (
                        e["event_type"] == "WORKSPACE_PROVISIONING"
                        and e["workspace_id"] == workspace_id
                        and e["payload"].get("generation") == 2
                    ),
                    timeout=60,
                )
            assert faults.replies == [], "every injected failure was met"
            assert faults.calls == 4, "the fourth terminate call went through"
            old = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
            assert old["State"]["Name"] == "terminated"
            new_id = second["payload"]["instance_id"]
            assert new_id != instance_id
            live = ec2.describe_instances(
                Filters=[
                    {"Name": "tag:molecule:workspace-id", "Values": [workspace_id]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )
            assert [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]] == [new_id]
            async with pool.acquire() as conn:
                leak_events = await conn.fetchval(
                    "SELECT count(*) FROM structure_events WHERE workspace_id = $1 AND event_type = $2",
                    uuid.UUID(workspace_id),
                    "WORKSPACE_LEAK_SUSPECT",
                )
            assert leak_events == 0
    finally:
        for managed in await provisioner.list_managed():
            await provisioner.stop(managed.instance_id)
        await stack.stop()
        await pool.close()
        await asyncio.sleep(0)
