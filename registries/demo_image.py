"""A tiny container image for the demo and the tests, built with no network.

The image holds a static busybox (Debian's ``busybox-static``) and one text file. It is written
either as a build context (a Dockerfile, for ``buildah bud``/``docker build``) or directly as an
OCI image layout (for ``skopeo copy oci:...``), with fixed timestamps, so the same content always
has the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
MESSAGE_PATH = "etc/hello.txt"
DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY hello.txt /etc/hello.txt
CMD ["/bin/busybox", "cat", "/etc/hello.txt"]
"""
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


class BusyboxMissing(Exception):
    pass


def busybox() -> bytes:
    """The static busybox binary; a dynamically linked one would not run in a ``scratch`` image."""
    if not BUSYBOX.exists():
        raise BusyboxMissing(
            f"{BUSYBOX} is missing: install Debian's busybox-static "
            "(`sudo apt-get install busybox-static`)."
        )
    return BUSYBOX.read_bytes()


def write_build_context(directory: Path, message: str) -> Path:
    """A build context whose Dockerfile builds the image; returns the Dockerfile's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "busybox").write_bytes(busybox())
    (directory / "busybox").chmod(0o755)
    (directory / "hello.txt").write_text(f"{message}\n")
    dockerfile = directory / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    return dockerfile


def _layer(message: str) -> bytes:
    """An uncompressed tar of the image's files, with fixed owners and times."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data, mode in (
            ("bin/busybox", busybox(), 0o755),
            (MESSAGE_PATH, f"{message}\n".encode(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(directory: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (directory / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def write_oci_layout(directory: Path, message: str, *, tag: str = "latest") -> str:
    """Write the image as an OCI image layout; returns the manifest's digest."""
    (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layer = _layer(message)
    machine = platform.machine()
    config = {
        "architecture": _ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "cat", f"/{MESSAGE_PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
        "history": [{"created_by": "controlplane demo image"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _blob(directory, _json(config), OCI_CONFIG),
        "layers": [_blob(directory, gzip.compress(layer, mtime=0), OCI_LAYER)],
    }
    descriptor = _blob(directory, _json(manifest), OCI_MANIFEST)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (directory / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [descriptor]}))
    (directory / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return str(descriptor["digest"])
