"""docker-compose.yml in production shape: validated structurally (images cannot be pulled here) and
by Debian's docker-compose when it is installed (CI installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from domain.images import is_moving
from domain.search_attributes import SEARCH_ATTRIBUTE_TYPES
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "docker-compose.yml"
DOCKER_OVERRIDE = REPO / "docker-compose.docker.yml"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else name.upper())
    return names


def test_services_and_pinned_images() -> None:
    services = load(BASE)["services"]
    assert {
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "api",
        "worker",
    } <= set(services)
    images = {name: svc["image"] for name, svc in services.items() if "image" in svc}
    for name, ref in images.items():
        assert not is_moving(ref), f"{name}: image {ref} is not pinned"
    assert images["postgres"].startswith("postgres:16.")
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    assert images["temporal-ui"].startswith("temporalio/ui:")
    dockerfile = (REPO / "Dockerfile").read_text()
    (base_image,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert not is_moving(base_image)


def test_temporal_runs_on_postgres_with_schema_namespace_and_search_attributes() -> None:
    services = load(BASE)["services"]
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert (
        services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    )
    schema_script = "\n".join(services["temporal-schema"]["command"])
    for step in ("create-database", "setup-schema", "update-schema", "temporal_visibility"):
        assert step in schema_script
    setup_script = "\n".join(services["temporal-setup"]["command"])
    assert "namespace create -n default" in setup_script
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
        assert f"{name}={kind}" in setup_script
    assert "8080:8080" in services["temporal-ui"]["ports"]


def test_api_and_worker_build_from_the_repo_with_known_settings() -> None:
    services = load(BASE)["services"]
    known = settings_env_names()
    for name in ("api", "worker", "migrate"):
        assert services[name]["build"] == "."
        unknown = set(services[name]["environment"]) - known
        assert not unknown, f"{name}: env names no Settings field reads: {unknown}"
        assert services[name]["depends_on"]
    assert (REPO / "Dockerfile").exists()


def test_docker_socket_only_in_the_docker_override_and_only_for_the_worker() -> None:
    base = BASE.read_text()
    assert "docker.sock" not in base.split("\nservices:", 1)[1]
    services = load(DOCKER_OVERRIDE)["services"]
    mounting = {
        name for name, svc in services.items() if any("docker.sock" in v for v in svc.get("volumes", []))
    }
    assert mounting == {"worker"}
    # The api only learns that agents sit on the private `molecule` network (the proxy reaches them).
    assert services["api"] == {"environment": {"A2A_ALLOW_PRIVATE_NETWORKS": "true"}}
    worker = services["worker"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert "docker" in worker["environment"]["MOLECULE_BACKENDS"].split(",")
    assert worker["environment"]["DOCKER_NETWORK"] == "molecule"
    assert load(BASE)["networks"]["molecule"]["name"] == "molecule"
    assert set(worker["environment"]) <= settings_env_names()


@pytest.mark.parametrize("files", [[BASE], [BASE, DOCKER_OVERRIDE]], ids=["base", "with-docker"])
def test_docker_compose_config_accepts_the_files(files: list[Path]) -> None:
    binary = shutil.which("docker-compose")
    require("docker-compose", binary is not None, "apt-get install -y docker-compose")
    assert binary is not None
    args = [binary, *(arg for f in files for arg in ("-f", str(f))), "config", "-q"]
    env = {**os.environ, "POSTGRES_PASSWORD": "x", "ADMIN_TOKEN": "y"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"},
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
