"""Template manifests (`templates/<name>/config.yaml`), parsed from already-loaded data."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    provision_timeout_seconds: int | None = Field(default=None, gt=0)
    required_env: list[str] = Field(default_factory=list)


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


def parse_template(name: str, data: dict[str, Any]) -> Template:
    return Template.model_validate({"name": name, **data})


def missing_required_env(template: Template | None, env: dict[str, str]) -> list[str]:
    if template is None:
        return []
    return [k for k in template.runtime_config.required_env if not (env.get(k) or "").strip()]
