"""Create → container running, through the API, against `docker run` of the same image.

Both sides start the locally built agent image on the host network. The API side is timed from the
POST /workspaces request to the moment the daemon reports the workspace's container running; the
baseline from invoking `docker run -d` to the same report. Runs alternate so both see the same
machine state.

    python -m bench.docker_create [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import docker
import httpx
import yaml
from docker.errors import NotFound

from backends.docker import container_name, volume_names
from bench.common import bench_stack, describe_ms
from molecule.agent_image import ensure_agent_image


def running(client: docker.DockerClient, name: str) -> bool:
    try:
        return bool(client.api.inspect_container(name)["State"]["Running"])
    except NotFound:
        return False


async def wait_running(client: docker.DockerClient, name: str) -> float:
    async with asyncio.timeout(60):
        while not await asyncio.to_thread(running, client, name):  # noqa: ASYNC110 - polls the daemon
            await asyncio.sleep(0.005)
    return time.perf_counter()


async def main(runs: int) -> None:
    client = docker.from_env()
    image = await asyncio.to_thread(ensure_agent_image, client)
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise SystemExit("the docker CLI is needed for the `docker run` baseline")
    templates = Path(tempfile.mkdtemp(prefix="molecule-bench-templates-"))
    (templates / "claude-code").mkdir()
    (templates / "claude-code" / "config.yaml").write_text(
        yaml.safe_dump({"runtime": "claude-code", "backend": "docker", "image": image})
    )
    api_times: list[float] = []
    run_times: list[float] = []
    cleanup: list[str] = []
    async with bench_stack({"TEMPLATES_DIR": str(templates), "DOCKER_NETWORK": "host"}) as stack:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            for i in range(runs + 1):  # the first pair warms both paths and is not counted
                started = time.perf_counter()
                reply = await api.post("/workspaces", json={"name": f"bench-{i}", "runtime": "claude-code"})
                reply.raise_for_status()
                workspace_id = reply.json()["workspace"]["id"]
                done = await wait_running(client, container_name(workspace_id))
                cleanup.append(workspace_id)
                if i:
                    api_times.append(done - started)

                name = f"bench-run-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        docker_cli,
                        "run",
                        "-d",
                        "--name",
                        name,
                        "--network",
                        "host",
                        "-e",
                        "WORKSPACE_ID=bench",
                        "-e",
                        f"PLATFORM_URL={stack.api_url}",
                        image,
                    ],
                    check=True,
                    capture_output=True,
                )
                done = await wait_running(client, name)
                if i:
                    run_times.append(done - started)
                await asyncio.to_thread(client.api.remove_container, name, force=True)
        for workspace_id in cleanup:
            for target in (container_name(workspace_id),):
                try:
                    client.api.remove_container(target, force=True)
                except NotFound:
                    pass
            for volume in volume_names(workspace_id):
                try:
                    client.volumes.get(volume).remove(force=True)
                except NotFound:
                    pass
    shutil.rmtree(templates, ignore_errors=True)

    print(f"docker create → running, {runs} each, alternating, image {image}")
    print(describe_ms("API create → container running", api_times))
    print(describe_ms("docker run -d → running", run_times))
    api_median, run_median = statistics.median(api_times), statistics.median(run_times)
    print(
        f"ratio (median) {api_median / run_median:.2f}×   difference (median) "
        f"{(api_median - run_median) * 1000:+.0f} ms   goal ≤ 1.3× or ≤ +150 ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
