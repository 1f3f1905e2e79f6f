"""Loads template manifests from `templates/<name>/config.yaml` (I/O: used by API and activities)."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from domain.templates import Template, parse_template
from domain.timeouts import manifest_timeout

log = logging.getLogger("molecule.templates")


class TemplateCatalog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._templates: dict[str, Template] = {}
        self.reload()

    def reload(self) -> None:
        templates: dict[str, Template] = {}
        for path in sorted(self.directory.glob("*/config.yaml")):
            name = path.parent.name
            try:
                data = yaml.safe_load(path.read_text()) or {}
                if not isinstance(data, dict):
                    raise ValueError("top level must be a mapping")
                templates[name] = parse_template(name, data)
            except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
                log.warning("skip %s: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        self._templates = templates

    def names(self) -> list[str]:
        return sorted(self._templates)

    def get(self, name: str) -> Template | None:
        return self._templates.get(name)

    def for_workspace(self, template: str | None, runtime: str) -> Template | None:
        """The named template, else the one named after the runtime."""
        return self._templates.get(template or runtime)

    def manifest_timeout(self, runtime: str) -> int | None:
        return manifest_timeout(
            t.runtime_config.provision_timeout_seconds
            for t in self._templates.values()
            if t.runtime == runtime
        )
