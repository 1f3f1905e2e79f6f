"""Which LLM provider a model slug (`provider/model`) runs on: one table, after the hermes template's
own derivation (molecule-ai-workspace-template-hermes, scripts/derive-provider.sh), with the
prefixes hermes v0.12.0 added. An unknown prefix derives nothing: the runtime decides."""

from __future__ import annotations

# The stored choices, as workspace secrets (so a restart keeps them).
MODEL_SECRET = "MODEL_PROVIDER"  # noqa: S105 - a name; the model slug as given
PROVIDER_SECRET = "LLM_PROVIDER"  # noqa: S105 - the provider, derived from the slug unless set

_PROVIDERS: dict[str, tuple[str, ...]] = {
    "minimax-cn": ("minimax-cn",),
    "kimi-coding-cn": ("kimi-coding-cn",),
    "minimax": ("minimax",),
    "anthropic": ("anthropic",),
    "gemini": ("gemini",),
    "deepseek": ("deepseek",),
    "zai": ("zai",),
    "kimi-coding": ("kimi-coding",),
    "alibaba": ("alibaba", "dashscope", "qwen"),
    "xiaomi": ("xiaomi", "mimo"),
    "arcee": ("arcee", "arcee-ai"),
    "nvidia": ("nvidia", "nim"),
    "ollama-cloud": ("ollama-cloud",),
    "huggingface": ("huggingface", "hf"),
    "ai-gateway": ("ai-gateway", "aigateway"),
    "kilocode": ("kilocode",),
    "opencode-zen": ("opencode-zen",),
    "opencode-go": ("opencode-go",),
    # Routed through OpenRouter at provision (the script picks a direct key when one is set; the
    # platform does not know which keys an agent holds).
    "openrouter": ("openrouter", "openai", "nousresearch"),
    "custom": ("custom",),
    # Added by hermes v0.12.0.
    "xai": ("xai", "grok"),
    "bedrock": ("bedrock", "aws"),
    "tencent-tokenhub": ("tencent", "tencent-tokenhub"),
    "gmi": ("gmi",),
    "qwen-oauth": ("qwen-oauth",),
    "lmstudio": ("lmstudio", "lm-studio"),
    "minimax-oauth": ("minimax-oauth",),
    "alibaba-coding-plan": ("alibaba-coding-plan",),
    "google-gemini-cli": ("google-gemini-cli",),
    "openai-codex": ("openai-codex",),
    "copilot-acp": ("copilot-acp",),
    "copilot": ("copilot",),
}
PREFIX_PROVIDER: dict[str, str] = {
    prefix: provider for provider, prefixes in _PROVIDERS.items() for prefix in prefixes
}


def derive_provider(model: str | None) -> str | None:
    """The provider of `prefix/model`, or None (no slash, or a prefix not in the table)."""
    if not model:
        return None
    prefix, slash, rest = model.strip().partition("/")
    if not slash or not rest:
        return None
    return PREFIX_PROVIDER.get(prefix.lower())


def model_secrets(model: str | None, provider: str | None = None) -> dict[str, str]:
    """The secrets a model choice is stored as: the slug, and its provider (given, else derived)."""
    if not model:
        return {PROVIDER_SECRET: provider} if provider else {}
    provider = provider or derive_provider(model)
    return {MODEL_SECRET: model, **({PROVIDER_SECRET: provider} if provider else {})}
