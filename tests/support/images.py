"""More images in an OCI layout written by ``registries.demo_image.write_oci_layout``, for tests
that need images sharing layers, or a multi-arch index, without building anything: a variant of
the layout's image (same layers, another config) and an image index of the layout's images.
``skopeo copy [--all] oci:<layout>:<tag> docker://...`` pushes each by its tag.

Also what the registry should count for them, worked out from the layout's own files: every
blob's size is its file's size, whatever the service under test computes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/")


def _read(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads(_blob_path(layout, digest).read_bytes()))


def _write(layout: Path, value: object, media_type: str) -> dict[str, Any]:
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _blob_path(layout, digest).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _tag(layout: Path, descriptor: dict[str, Any], tag: str) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [
        m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag
    ] + [{**descriptor, "annotations": {REF_NAME: tag}}]
    (layout / "index.json").write_text(json.dumps(index))


def tagged(layout: Path, tag: str = "latest") -> str:
    """The digest the layout's ``tag`` names."""
    index = json.loads((layout / "index.json").read_text())
    return next(str(m["digest"]) for m in index["manifests"] if m["annotations"][REF_NAME] == tag)


def add_variant(
    layout: Path, tag: str, *, label: str, architecture: str | None = None, of: str = "latest"
) -> str:
    """Tag ``tag`` an image with the layers of the image tagged ``of`` and a config that differs
    by a label (and, if given, its architecture); returns its manifest digest."""
    manifest = _read(layout, tagged(layout, of))
    config = _read(layout, manifest["config"]["digest"])
    config.setdefault("config", {})["Labels"] = {"variant": label}
    if architecture is not None:
        config["architecture"] = architecture
    manifest["config"] = _write(layout, config, manifest["config"]["mediaType"])
    descriptor = _write(layout, manifest, manifest["mediaType"])
    _tag(layout, descriptor, tag)
    return str(descriptor["digest"])


def add_index(layout: Path, tag: str, *, members: list[str]) -> str:
    """Tag ``tag`` an OCI image index of the layout's images tagged ``members``, each for the
    architecture its config names; returns the index's digest."""
    descriptors = []
    for member in members:
        digest = tagged(layout, member)
        manifest = _read(layout, digest)
        config = _read(layout, manifest["config"]["digest"])
        descriptors.append(
            {
                "mediaType": manifest["mediaType"],
                "digest": digest,
                "size": _blob_path(layout, digest).stat().st_size,
                "platform": {"os": config["os"], "architecture": config["architecture"]},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    descriptor = _write(layout, index, OCI_INDEX)
    _tag(layout, descriptor, tag)
    return str(descriptor["digest"])


def unique_blobs(layout: Path, *tags: str) -> dict[str, int]:
    """``{digest: size}`` of every blob the images tagged ``tags`` take in a registry: each
    manifest (an index's members too), its config and its layers, each once."""
    blobs: dict[str, int] = {}

    def visit(digest: str) -> None:
        blobs[digest] = _blob_path(layout, digest).stat().st_size
        document = _read(layout, digest)
        for member in document.get("manifests", []):
            visit(member["digest"])
        for descriptor in [document.get("config"), *document.get("layers", [])]:
            if descriptor:
                blobs[descriptor["digest"]] = (
                    _blob_path(layout, descriptor["digest"]).stat().st_size
                )

    for tag in tags:
        visit(tagged(layout, tag))
    return blobs
