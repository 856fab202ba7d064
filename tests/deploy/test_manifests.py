"""deploy/compose.yaml and deploy/kubernetes/, checked offline against the schemas that packages
ship: the Compose Specification's (vendored in check-jsonschema) and Kubernetes' OpenAPI schemas
(kubernetes-validate, strict: an unknown field is an error). The Kustomize overlay is rendered
here with the few Kustomize features deploy/kubernetes uses (resources, namespace, labels, images,
replicas, strategic-merge patches), so that no kustomize binary is needed; a feature outside that
set fails the render rather than passing unrendered.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.32.0"
IMAGE_UID = 10001
KUSTOMIZE_FIELDS = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches",
}  # fmt: skip


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge: mappings merge key by key; lists of named mappings merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    ):
        merged_list = list(base)
        for item in patch:
            names = [existing["name"] for existing in merged_list]
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = _merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def render(directory: Path) -> list[dict[str, Any]]:
    """What ``kustomize build directory`` prints, for the features deploy/kubernetes uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= KUSTOMIZE_FIELDS, set(kustomization) - KUSTOMIZE_FIELDS
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        documents += render(path) if path.is_dir() else _documents(path)
    documents = copy.deepcopy(documents)
    for patch_entry in kustomization.get("patches", []):
        assert set(patch_entry) == {"path"}, patch_entry
        for patch in _documents(directory / patch_entry["path"]):
            targets = [
                index
                for index, document in enumerate(documents)
                if (document["kind"], document["metadata"]["name"])
                == (patch["kind"], patch["metadata"]["name"])
            ]
            assert len(targets) == 1, f"patch {patch_entry['path']} matches {len(targets)}"
            documents[targets[0]] = _merge(documents[targets[0]], patch)
    for replicas in kustomization.get("replicas", []):
        matches = [
            d
            for d in documents
            if d["kind"] in ("Deployment", "StatefulSet")
            and d["metadata"]["name"] == replicas["name"]
        ]
        assert len(matches) == 1, replicas
        matches[0]["spec"]["replicas"] = replicas["count"]
    for image in kustomization.get("images", []):
        for document in documents:
            for container in _containers(document):
                if container["image"] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for label in kustomization.get("labels", []):
        assert set(label) == {"pairs"}, label  # metadata only: selectors are left alone
        for document in documents:
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] != "Namespace":
                document["metadata"]["namespace"] = kustomization["namespace"]
            for subject in document.get("subjects", []):
                subject["namespace"] = kustomization["namespace"]
    return documents


def by_kind_and_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    assert len(found) == len(documents), "two resources share a kind and a name"
    return found


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)

    services = compose["services"]
    assert set(services) == {
        "postgres", "redis", "registry", "web", "worker", "beat", "migrate", "keys",
    }  # fmt: skip
    for name in ("web", "worker", "beat", "migrate", "keys"):
        assert services[name]["image"].startswith("${CONTROLPLANE_IMAGE:-")
        assert services[name]["read_only"] is True
    for one_shot in ("migrate", "keys"):
        assert services[one_shot]["restart"] == "no"
        for process in ("web", "worker", "beat"):
            condition = services[process]["depends_on"][one_shot]["condition"]
            assert condition == "service_completed_successfully"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])


def test_a_compose_file_that_breaks_the_specification_is_refused() -> None:
    """The check can fail: a misspelt key is refused by the same schema."""
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose["services"]["web"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(compose)


@pytest.mark.parametrize("directory", ["base", "overlays/production", "registry-backend"])
def test_the_kubernetes_manifests_are_valid_against_the_openapi_schemas(directory: str) -> None:
    for document in render(DEPLOY / "kubernetes" / directory):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_manifest_with_an_unknown_field_is_refused() -> None:
    """The validator is strict: a misspelt field fails it."""
    web = by_kind_and_name(render(DEPLOY / "kubernetes" / "base"))["Deployment", "controlplane-web"]
    web["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_the_production_overlay_runs_what_the_issue_asks() -> None:
    resources_ = by_kind_and_name(render(DEPLOY / "kubernetes" / "overlays" / "production"))
    deployments = {name for kind, name in resources_ if kind == "Deployment"}
    assert deployments == {"controlplane-web", "controlplane-worker", "controlplane-beat"}
    assert {name for kind, name in resources_ if kind == "Job"} == {
        "controlplane-migrate", "controlplane-keys",
    }  # fmt: skip
    assert ("Secret", "controlplane-registry-keys") in resources_
    assert ("ConfigMap", "controlplane-config") in resources_
    assert ("Service", "controlplane-web") in resources_
    assert ("PodDisruptionBudget", "controlplane-web") in resources_

    # Two beats, one active and one standby (issue 16), kept two through a rolling update.
    beat = resources_["Deployment", "controlplane-beat"]["spec"]
    assert beat["replicas"] == 2
    assert beat["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert ("PodDisruptionBudget", "controlplane-beat") in resources_
    assert resources_["Deployment", "controlplane-web"]["spec"]["replicas"] == 3

    web = _containers(resources_["Deployment", "controlplane-web"])[0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = _containers(resources_["Deployment", "controlplane-worker"])[0]
    assert worker["livenessProbe"]["exec"]["command"][-2:] == ["probe", "worker"]
    assert {"name": "CELERY_WORKER_CONCURRENCY", "value": "8"} in worker["env"]

    for document in resources_.values():
        if document["kind"] not in ("Deployment", "Job"):
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID
        for container in _containers(document):
            assert container["image"] == "registry.example.com/controlplane:1.0.0"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
            assert "/tmp" in mounts  # noqa: S108 - the writable emptyDir of a read-only root
        assert document["metadata"]["namespace"] == "controlplane"


def test_the_image_runs_as_the_user_the_manifests_name() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in containerfile
    assert "requirements-dev" not in containerfile
