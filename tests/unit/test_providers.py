"""The model slug → provider table, the secrets a model choice is stored as, and what /templates
shows of a template (and skips)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.templates import TemplateCatalog
from domain.providers import PREFIX_PROVIDER, derive_provider, model_secrets

# Every row of the hermes template's derivation (scripts/derive-provider.sh), with the v0.12.0
# prefixes; openai/ and nousresearch/ are routed to openrouter at provision.
TABLE = {
    "minimax-cn": "minimax-cn",
    "kimi-coding-cn": "kimi-coding-cn",
    "minimax": "minimax",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "deepseek": "deepseek",
    "zai": "zai",
    "kimi-coding": "kimi-coding",
    "alibaba": "alibaba",
    "dashscope": "alibaba",
    "qwen": "alibaba",
    "xiaomi": "xiaomi",
    "mimo": "xiaomi",
    "arcee": "arcee",
    "arcee-ai": "arcee",
    "nvidia": "nvidia",
    "nim": "nvidia",
    "ollama-cloud": "ollama-cloud",
    "huggingface": "huggingface",
    "hf": "huggingface",
    "ai-gateway": "ai-gateway",
    "aigateway": "ai-gateway",
    "kilocode": "kilocode",
    "opencode-zen": "opencode-zen",
    "opencode-go": "opencode-go",
    "openai": "openrouter",
    "nousresearch": "openrouter",
    "openrouter": "openrouter",
    "custom": "custom",
    "xai": "xai",
    "grok": "xai",
    "bedrock": "bedrock",
    "aws": "bedrock",
    "tencent": "tencent-tokenhub",
    "tencent-tokenhub": "tencent-tokenhub",
    "gmi": "gmi",
    "qwen-oauth": "qwen-oauth",
    "lmstudio": "lmstudio",
    "lm-studio": "lmstudio",
    "minimax-oauth": "minimax-oauth",
    "alibaba-coding-plan": "alibaba-coding-plan",
    "google-gemini-cli": "google-gemini-cli",
    "openai-codex": "openai-codex",
    "copilot-acp": "copilot-acp",
    "copilot": "copilot",
}


@pytest.mark.parametrize(("prefix", "provider"), sorted(TABLE.items()))
def test_each_prefix_derives_its_provider(prefix: str, provider: str) -> None:
    assert derive_provider(f"{prefix}/some-model-1") == provider


def test_the_table_has_no_row_the_test_does_not_pin() -> None:
    assert PREFIX_PROVIDER == TABLE


@pytest.mark.parametrize(
    "model", [None, "", "claude-sonnet", "unknown/model", "anthropic/", "/model", "anthropic:claude"]
)
def test_unknown_or_malformed_slugs_derive_nothing(model: str | None) -> None:
    assert derive_provider(model) is None


def test_prefixes_match_exactly_and_case_insensitively() -> None:
    assert derive_provider("minimax-cn/abab") == "minimax-cn"  # not minimax
    assert derive_provider("kimi-coding-cn/k2") == "kimi-coding-cn"
    assert derive_provider("Anthropic/claude") == "anthropic"
    assert derive_provider("openrouter/anthropic/claude-3") == "openrouter"


def test_a_model_choice_is_stored_as_its_slug_and_provider() -> None:
    assert model_secrets("xai/grok-4") == {"MODEL_PROVIDER": "xai/grok-4", "LLM_PROVIDER": "xai"}
    assert model_secrets("mystery/model") == {"MODEL_PROVIDER": "mystery/model"}
    assert model_secrets(None) == {}


def write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "config.yaml").write_text(text)


def test_template_summaries_and_a_malformed_one_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "bare", "runtime: codex\n")
    write(
        tmp_path,
        "full",
        """name: Full Hermes
runtime: hermes
backend: docker
model: nousresearch/hermes-4
runtime_config:
  required_env: [OPENROUTER_API_KEY]
  provision_timeout_seconds: 2400
  providers: [openrouter, anthropic]
providers:
  - name: openrouter
    auth_env: [OPENROUTER_API_KEY]
    model_prefixes: [openai/, nousresearch/]
    base_url: https://openrouter.ai/api/v1
  - name: anthropic
    auth_env: [ANTHROPIC_API_KEY]
    model_aliases: [sonnet]
""",
    )
    write(tmp_path, "nested", "runtime: claude-code\nruntime_config:\n  model: anthropic/claude-sonnet-4\n")
    write(tmp_path, "broken", "runtime: [unterminated\n")
    with caplog.at_level(logging.WARNING):
        catalog = TemplateCatalog(tmp_path)
    assert catalog.names() == ["bare", "full", "nested"]
    assert any(r.getMessage().startswith("skip broken: ") for r in caplog.records)
    summaries = {name: catalog.get(name).summary(name) for name in catalog.names()}  # type: ignore[union-attr]
    assert summaries["bare"] == {"id": "bare", "name": "bare", "runtime": "codex"}
    assert summaries["nested"]["model"] == "anthropic/claude-sonnet-4"
    assert summaries["full"] == {
        "id": "full",
        "name": "Full Hermes",
        "runtime": "hermes",
        "backend": "docker",
        "model": "nousresearch/hermes-4",
        "required_env": ["OPENROUTER_API_KEY"],
        "provision_timeout_seconds": 2400,
        "providers": ["openrouter", "anthropic"],
        "provider_registry": [
            {
                "name": "openrouter",
                "auth_env": ["OPENROUTER_API_KEY"],
                "model_prefixes": ["openai/", "nousresearch/"],
                "base_url": "https://openrouter.ai/api/v1",
            },
            {"name": "anthropic", "auth_env": ["ANTHROPIC_API_KEY"], "model_aliases": ["sonnet"]},
        ],
    }


def test_the_shipped_templates_declare_their_providers() -> None:
    catalog = TemplateCatalog(Path(__file__).resolve().parents[2] / "templates")
    for name in catalog.names():
        summary = catalog.get(name).summary(name)  # type: ignore[union-attr]
        assert summary.get("providers"), f"template {name} declares no providers"
        assert summary.get("model"), f"template {name} declares no default model"
