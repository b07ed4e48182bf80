"""Read rendered WorkflowTemplates (and Workflows) from YAML files into a Library.

Each definition is checked as it is read (rollguard.sandbox.executor.feature_checks): a template that
uses an Argo feature the local executor does not implement fails the load with UnsupportedFeature
naming the feature and the template. Fields that only matter to Kubernetes (image, resources, service
account, pod metadata...) have no local meaning; they are listed in `ignored_fields` and reported once
per run, never dropped unseen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.feature_checks import check_definition

KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "Workflow")


@dataclass
class WorkflowDefinition:
    """One WorkflowTemplate (or Workflow): its name, spec and the file it came from."""

    kind: str
    name: str
    spec: dict[str, Any]
    source: Path

    def template(self, name: str, where: str) -> dict[str, Any]:
        """The template called `name` in this definition; ExecutorError naming `where` if absent."""
        for template in self.spec.get("templates") or []:
            if template.get("name") == name:
                return template
        known = ", ".join(str(t.get("name")) for t in self.spec.get("templates") or [])
        raise ExecutorError(f"{where}: no template {name!r} in {self.kind} {self.name} ({self.source}); "
                            f"it has: {known}")


@dataclass
class Library:
    """Every definition loaded, by name, and the Kubernetes-only fields seen (reported, not used)."""

    definitions: dict[str, WorkflowDefinition] = field(default_factory=dict)
    ignored_fields: list[str] = field(default_factory=list)

    def get(self, name: str, where: str) -> WorkflowDefinition:
        """The WorkflowTemplate called `name`; ExecutorError listing the loaded ones if absent."""
        if name not in self.definitions:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise ExecutorError(f"{where}: WorkflowTemplate {name!r} is not loaded (loaded: {known}); "
                                "put its YAML file next to the one you run, or pass it with --templates")
        return self.definitions[name]


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def load_files(paths: list[Path]) -> Library:
    """Parse and check every WorkflowTemplate/Workflow in `paths` (several YAML documents per file)."""
    library = Library()
    yaml = YAML(typ="safe", pure=True)
    for path in paths:
        try:
            documents = list(yaml.load_all(path.read_text()))
        except OSError as exc:
            raise ExecutorError(f"cannot read {path}: {exc}") from None
        except YAMLError as exc:
            raise ExecutorError(f"{path} is not valid YAML: {exc}") from None
        for document in documents:
            if document is None:
                continue
            document = _plain(document)
            if not isinstance(document, dict) or document.get("kind") not in KINDS:
                kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
                raise ExecutorError(f"{path}: a document of kind {kind!r}; the local executor runs "
                                    f"{', '.join(KINDS)}")
            metadata = document.get("metadata") or {}
            name = metadata.get("name") or metadata.get("generateName") or path.stem
            definition = WorkflowDefinition(document["kind"], str(name), document.get("spec") or {}, path)
            check_definition(definition, library.ignored_fields)
            if definition.name in library.definitions:
                other = library.definitions[definition.name].source
                raise ExecutorError(f"{path}: {definition.kind} {definition.name!r} is defined twice (also in {other})")
            library.definitions[definition.name] = definition
    return library
