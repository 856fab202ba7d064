"""The registry token keys in deploy/kubernetes/: the signing keys are in the database, so no
pod mounts the keys Secret; the CA's private key (``ca.key``) is read by the keys Job alone,
through the API, after the migrate Job (docs/registry-tokens.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import ROOT

BASE = ROOT / "deploy" / "kubernetes" / "base"
SECRET = "controlplane-registry-keys"


def _key_volumes() -> dict[str, dict[str, Any]]:
    """Each workload's volume of the keys Secret, by the workload's file and name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(BASE).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            spec = ((document or {}).get("spec") or {}).get("template", {}).get("spec", {})
            if document and document.get("kind") == "CronJob":
                spec = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            for volume in spec.get("volumes", []):
                if volume.get("secret", {}).get("secretName") == SECRET:
                    found[f"{path.name}:{document['metadata']['name']}"] = volume["secret"]
    return found


def test_no_pod_mounts_the_keys_secret() -> None:
    assert _key_volumes() == {}


def _documents(name: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((BASE / name).read_text()) if document]


def test_web_and_worker_pods_mount_no_key_files_and_get_the_kek_from_a_secret() -> None:
    for name in ("web.yaml", "worker.yaml", "migrate-job.yaml"):
        for document in _documents(name):
            spec = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
                assert "/var/lib/controlplane/keys" not in mounts, name
                secrets = {
                    ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref
                }
                assert "controlplane-env" in secrets, name  # REGISTRY_KEYS_ENCRYPTION_KEYS
    assert "REGISTRY_KEYS_ENCRYPTION_KEYS" in (BASE / "configmap.yaml").read_text()


def test_the_keys_job_waits_for_the_migrations() -> None:
    [job] = [document for document in _documents("keys-job.yaml") if document["kind"] == "Job"]
    [wait] = job["spec"]["template"]["spec"]["initContainers"]

    assert "migrate --check" in " ".join(wait["args"])


def test_the_upgrade_steps_rerun_the_keys_job_after_migrate_and_before_the_roll() -> None:
    """Only ``registry_keys init`` imports the signing keys of a version that kept them in files:
    an upgrade that migrates and rolls without it leaves the token endpoint without a key."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    upgrades = readme.split("\n## Upgrades\n", 1)[1].split("\n## ", 1)[0]
    steps = [step for step in upgrades.split("\n") if step[:1].isdigit()]
    migrate = next(i for i, step in enumerate(steps) if "Run `migrate`" in step)
    keys = next(i for i, step in enumerate(steps) if "keys Job (`registry_keys init`)" in step)
    roll = next(i for i, step in enumerate(steps) if step.split(". ", 1)[1].startswith("Roll"))
    assert migrate < keys < roll
    assert "controlplane-keys" in upgrades  # the finished Job is deleted, as migrate's is
