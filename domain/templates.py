"""Template manifests (`templates/<name>/config.yaml`), parsed from already-loaded data."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    provision_timeout_seconds: int | None = Field(default=None, gt=0)
    required_env: list[str] = Field(default_factory=list)
    model: str | None = None  # the runtime's default model
    providers: list[str] = Field(default_factory=list)  # provider slugs the runtime supports


class ProviderEntry(BaseModel):
    """One entry of a template's top-level `providers:` block (its provider registry)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    auth_env: list[str] | str | None = None
    model_prefixes: list[str] | None = None
    model_aliases: list[str] | dict[str, str] | None = None
    base_url: str | None = None


class Template(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    runtime: str
    backend: str | None = None
    # argv for the process backend; "{python}" is replaced by the worker's interpreter.
    command: list[str] = Field(default_factory=list)
    image: str | None = None  # docker backend
    ami: str | None = None  # ec2 backend (else EC2_AMI_ID)
    instance_type: str | None = None  # ec2 backend (else EC2_INSTANCE_TYPE)
    env: dict[str, str] = Field(default_factory=dict)
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig)
    model: str | None = None  # legacy: a top-level default model
    providers: list[ProviderEntry] = Field(default_factory=list)
    description: str | None = None

    @property
    def default_model(self) -> str | None:
        return self.model or self.runtime_config.model or None

    def summary(self, template_id: str) -> dict[str, Any]:
        """What `GET /templates` shows of it: fields a template does not declare are left out."""
        out: dict[str, Any] = {"id": template_id, "name": self.name, "runtime": self.runtime}
        optional: dict[str, Any] = {
            "description": self.description,
            "backend": self.backend,
            "model": self.default_model,
            "required_env": self.runtime_config.required_env,
            "provision_timeout_seconds": self.runtime_config.provision_timeout_seconds,
            "providers": self.runtime_config.providers,
            "provider_registry": [p.model_dump(exclude_none=True) for p in self.providers],
        }
        out.update({k: v for k, v in optional.items() if v})
        return out


def parse_template(name: str, data: dict[str, Any]) -> Template:
    return Template.model_validate({"name": name, **data})


def missing_required_env(template: Template | None, env: dict[str, str]) -> list[str]:
    if template is None:
        return []
    return [k for k in template.runtime_config.required_env if not (env.get(k) or "").strip()]
