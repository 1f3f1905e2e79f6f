"""Model and provider on real PostgreSQL, Temporal and process instances: kept as secrets through
restarts, derived from the slug, changed with a restart, defaulted from the template; `/templates`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backends.process import ProcessProvisioner, parse_instance_id
from tests.integration.api import bearer, create, until
from tests.integration.test_secrets import instance_env

pytestmark = pytest.mark.integration


def templates(root: Path) -> Path:
    """One sleeping process template per runtime (the env is what is looked at); `tuned` names a
    runtime and a legacy top-level model."""
    for runtime in ("claude-code", "codex", "hermes", "openclaw"):
        (root / runtime).mkdir(parents=True)
        manifest = {"runtime": runtime, "backend": "process", "command": ["sleep", "600"]}
        (root / runtime / "config.yaml").write_text(yaml.safe_dump(manifest))
    (root / "tuned").mkdir()
    (root / "tuned" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "runtime": "hermes",
                "backend": "process",
                "command": ["sleep", "600"],
                "model": "xai/grok-4",
                "runtime_config": {"providers": ["xai"]},
                "providers": [
                    {"name": "xai", "auth_env": ["XAI_API_KEY"], "base_url": "https://api.x.ai/v1"}
                ],
            }
        )
    )
    (root / "broken").mkdir()
    (root / "broken" / "config.yaml").write_text("runtime: [\n")
    return root


async def pid_of(stack, workspace_id: str) -> int | None:
    found = await ProcessProvisioner(stack.data_dir, stack.platform_id).list_managed(workspace_id)
    return parse_instance_id(found[0].instance_id)[0] if found else None


async def test_model_env_for_every_runtime_and_the_fallback_to_the_stored_model(make_stack, tmp_path):
    stack = await make_stack(TEMPLATES_DIR=templates(tmp_path / "templates"))
    async with stack.client() as client:
        for runtime in ("claude-code", "codex", "hermes", "openclaw"):
            wid = (await create(client, runtime=runtime, model="anthropic/claude-opus-4"))["workspace"]["id"]
            env = await instance_env(stack, wid)
            assert env["MODEL"] == "anthropic/claude-opus-4", runtime
            assert env["MODEL_PROVIDER"] == "anthropic/claude-opus-4"
            assert env["LLM_PROVIDER"] == "anthropic"
            assert ("HERMES_DEFAULT_MODEL" in env) == (runtime == "hermes")
            if runtime == "hermes":
                assert env["HERMES_DEFAULT_MODEL"] == "anthropic/claude-opus-4"

        # No model in the request, none in the template: MODEL comes from the stored MODEL_PROVIDER.
        wid = (await create(client, runtime="codex"))["workspace"]["id"]
        assert "MODEL" not in await instance_env(stack, wid)
        first = await pid_of(stack, wid)
        reply = await client.post(
            f"/workspaces/{wid}/secrets?restart=true", json={"key": "MODEL_PROVIDER", "value": "deepseek/v3"}
        )
        assert reply.json()["restarted"] == [wid]

        async def replaced() -> bool:
            pid = await pid_of(stack, wid)
            return pid is not None and pid != first

        await until(replaced, "the restarted instance")
        assert (await instance_env(stack, wid))["MODEL"] == "deepseek/v3"

        # The stored MODEL_PROVIDER is the one truth, also for a workspace created with a model.
        wid = (await create(client, runtime="claude-code", model="gemini/2.5-pro"))["workspace"]["id"]
        first = await _first_pid(stack, wid)
        await client.put(
            f"/workspaces/{wid}/secrets?restart=true", json={"key": "MODEL_PROVIDER", "value": "zai/glm"}
        )
        await until(replaced, "the restarted instance")
        assert (await instance_env(stack, wid))["MODEL"] == "zai/glm"
        assert (await client.get(f"/workspaces/{wid}/model")).json()["model"] == "zai/glm"


async def test_model_and_provider_routes_keep_derive_and_restart(make_stack, tmp_path):
    stack = await make_stack(TEMPLATES_DIR=templates(tmp_path / "templates"))
    async with stack.client() as client:
        created = await create(client, runtime="hermes", model="nousresearch/hermes-4")
        wid, token = created["workspace"]["id"], created["auth_token"]
        names = {s["key"] for s in (await client.get(f"/workspaces/{wid}/secrets")).json()}
        assert {"MODEL_PROVIDER", "LLM_PROVIDER"} <= names
        assert (await client.get(f"/workspaces/{wid}/model")).json() == {
            "model": "nousresearch/hermes-4",
            "provider": "openrouter",
            "source": "workspace_secrets",
        }
        assert (await client.get(f"/workspaces/{wid}/model", headers=bearer(token))).status_code == 200
        first = await _first_pid(stack, wid)

        reply = await client.put(f"/workspaces/{wid}/model", json={"model": "xai/grok-4"})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "status": "saved",
            "model": "xai/grok-4",
            "provider": "xai",
            "restarted": True,
        }

        async def replaced() -> bool:
            pid = await pid_of(stack, wid)
            return pid is not None and pid != first

        await until(replaced, "the restart after the model change")
        env = await instance_env(stack, wid)
        assert env["MODEL"] == env["HERMES_DEFAULT_MODEL"] == "xai/grok-4"
        assert env["LLM_PROVIDER"] == "xai"
        same = await client.put(f"/workspaces/{wid}/model", json={"model": "xai/grok-4"})
        assert same.json()["status"] == "unchanged" and same.json()["restarted"] is False

        explicit = await client.put(f"/workspaces/{wid}/provider", json={"provider": "custom"})
        assert explicit.json()["provider"] == "custom" and explicit.json()["restarted"] is True
        assert (await client.get(f"/workspaces/{wid}/provider")).json() == {
            "provider": "custom",
            "source": "workspace_secrets",
        }
        cleared = await client.put(f"/workspaces/{wid}/provider", json={"provider": ""})
        assert cleared.json()["status"] == "cleared" and cleared.json()["provider"] == "xai"

        await client.put(f"/workspaces/{wid}/model", json={"model": "mystery/model-9"})
        assert (await client.get(f"/workspaces/{wid}/provider")).json() == {
            "provider": "",
            "source": "unresolved",
        }
        assert "LLM_PROVIDER" not in {
            s["key"] for s in (await client.get(f"/workspaces/{wid}/secrets")).json()
        }

        bad = [
            await client.get("/workspaces/not-a-uuid/model"),
            await client.put("/workspaces/not-a-uuid/provider", json={"provider": "x"}),
            await client.put(f"/workspaces/{wid}/provider", json={"provider": "Not A Slug"}),
            await client.put(f"/workspaces/{wid}/model", json={}),
        ]
        assert [r.status_code for r in bad] == [400, 400, 422, 422], [r.text for r in bad]
        other = await create(client, name="other", runtime="codex")
        assert (
            await client.get(f"/workspaces/{wid}/model", headers=bearer(other["auth_token"]))
        ).status_code == 403


async def _first_pid(stack, wid: str) -> int:
    await instance_env(stack, wid)
    pid = await pid_of(stack, wid)
    assert pid is not None
    return pid


async def test_template_defaults_and_the_templates_list(make_stack, tmp_path):
    stack = await make_stack(TEMPLATES_DIR=templates(tmp_path / "templates"))
    async with stack.client() as client:
        # A template but no runtime records the template's runtime; its legacy top-level model applies.
        workspace = (await create(client, template="tuned"))["workspace"]
        assert workspace["runtime"] == "hermes"
        assert workspace["model"] == "xai/grok-4"
        assert (await client.get(f"/workspaces/{workspace['id']}/provider")).json()["provider"] == "xai"
        # A model in the request wins over the template's.
        assert (await create(client, template="tuned", model="gemini/2.5-pro"))["workspace"][
            "model"
        ] == "gemini/2.5-pro"

        listed = (await client.get("/templates")).json()
        by_id = {t["id"]: t for t in listed}
        assert sorted(by_id) == ["claude-code", "codex", "hermes", "openclaw", "tuned"], "broken is skipped"
        assert by_id["codex"] == {"id": "codex", "name": "codex", "runtime": "codex", "backend": "process"}
        assert by_id["tuned"]["providers"] == ["xai"]
        assert by_id["tuned"]["provider_registry"] == [
            {"name": "xai", "auth_env": ["XAI_API_KEY"], "base_url": "https://api.x.ai/v1"}
        ]
        assert "null" not in (await client.get("/templates")).text
        assert "skip broken: " in stack.logs("api")
        async with stack.client() as anonymous:
            anonymous.headers.pop("Authorization")
            assert (await anonymous.get("/templates")).status_code == 401
