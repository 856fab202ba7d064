"""The registry token keys in deploy/kubernetes/: the pods that only sign tokens mount what
signing needs from the keys Secret, never the CA's private key (``ca.key``), which only the keys
Job reads, through the API, to issue signing keys (docs/registry-tokens.md)."""

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


def test_no_pod_mounts_the_cas_private_key() -> None:
    volumes = _key_volumes()

    assert {name.split(":")[0] for name in volumes} >= {"web.yaml", "worker.yaml"}
    for name, secret in volumes.items():
        keys = {item["key"] for item in secret.get("items", [])}
        assert keys == {"ca.crt", "signing.pem", "signing-previous.pem"}, name
        assert secret.get("optional") is True, name  # signing-previous.pem comes with a rotation
