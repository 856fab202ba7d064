"""P7: a push and a pull of a 100 MB image through token authentication, against the same
registry without authentication (skopeo, real ``docker-registry`` processes)."""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import time
import uuid
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from bench.measures import Measure, Result, at_most, progress
from bench.measures.http import fixture

if TYPE_CHECKING:
    from bench.stack import Stack

#: P7: the image's one layer, random bytes (incompressible).
IMAGE_MB = 100

NOTES = [
    f"**P7**: `skopeo copy` of a one-layer image ({IMAGE_MB} MB of random bytes, a new layer "
    "every round so that nothing is mounted or skipped) from an OCI layout to the registry and "
    "back to a `dir:`, through token authentication (the job credential, tokens from gunicorn) "
    "and through a second `docker-registry` with the same configuration minus `auth`; ratio = "
    "time with auth / time without.",
]


def _oci_layout(folder: Path, megabytes: int) -> None:
    """An OCI image layout in ``folder``: one uncompressed layer holding ``megabytes`` of
    random bytes in one file, a config and a manifest, tagged ``latest``."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        payload = os.urandom(megabytes * 1024 * 1024)
        member = tarfile.TarInfo("payload.bin")
        member.size = len(payload)
        member.mtime = int(time.time())
        archive.addfile(member, io.BytesIO(payload))
    layer_digest, layer_size = blob(layer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {},
    }
    config_digest, config_size = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _unauthenticated_registry(stack: Stack) -> str:
    """A second ``docker-registry``: the stack's configuration without ``auth``, its own port
    and storage. Returns its host:port."""
    from bench.stack import free_port

    port = free_port()
    config = yaml.safe_load((stack.workdir / "registry" / "config.yml").read_text())
    config.pop("auth")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"].pop("debug", None)
    config["storage"]["filesystem"]["rootdirectory"] = str(stack.workdir / "registry-open-data")
    path = stack.workdir / "registry" / "open.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    stack.registry_process("registry-open", path, port)
    return f"127.0.0.1:{port}"


def _copy_time(source: str, destination: str, credentials: str | None, workdir: Path) -> float:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise RuntimeError("skopeo is not installed: `sudo apt-get install skopeo`")
    argv = [skopeo, "--tmpdir", str(workdir), "copy", "--quiet"]
    if source.startswith("docker://"):
        argv += ["--src-tls-verify=false"] + (["--src-creds", credentials] if credentials else [])
    if destination.startswith("docker://"):
        argv += ["--dest-tls-verify=false"] + (["--dest-creds", credentials] if credentials else [])
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - skopeo on our own registries
        [*argv, source, destination], capture_output=True, text=True, check=False, timeout=600
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy {source} {destination} failed:\n{result.stderr[-2000:]}")
    return elapsed


def _push_pull(layout: Path, host: str, repository: str, credentials: str | None) -> float:
    pulled = layout.parent / f"pulled-{uuid.uuid4().hex[:8]}"
    reference = f"docker://{host}/{repository}:latest"
    try:
        push = _copy_time(f"oci:{layout}:latest", reference, credentials, layout.parent)
        pull = _copy_time(reference, f"dir:{pulled}", credentials, layout.parent)
    finally:
        shutil.rmtree(pulled, ignore_errors=True)
    return push + pull


def _p7(stack: Stack, rounds: int) -> Result:
    from registries.services import JOB_CREDENTIAL_USERNAME

    rows = fixture(stack)
    open_host = _unauthenticated_registry(stack)
    credentials = f"{JOB_CREDENTIAL_USERNAME}:{rows.job_credential}"
    with_auth: list[float] = []
    without: list[float] = []
    base = stack.workdir / "p7"
    for index in range(rounds):
        layout = base / f"round-{index}" / "layout"
        _oci_layout(layout, IMAGE_MB)
        repository = f"{rows.namespace}/big{index}"
        runs = [("auth", stack.registry_host, credentials), ("open", open_host, None)]
        for name, host, creds in runs if index % 2 == 0 else runs[::-1]:
            seconds = _push_pull(layout, host, repository, creds)
            (with_auth if name == "auth" else without).append(seconds)
        shutil.rmtree(layout.parent, ignore_errors=True)
        progress(
            f"P7 round {index + 1}: {with_auth[-1]:.2f}s with auth, {without[-1]:.2f}s without "
            f"= {with_auth[-1] / without[-1]:.2f}×"
        )
    ratios = [a / b for a, b in zip(with_auth, without, strict=True)]
    return Result(
        ratios,
        f"push + pull of {IMAGE_MB} MB: {statistics.median(with_auth):.2f}s with token "
        f"auth vs {statistics.median(without):.2f}s without (medians)",
        {"with_auth": with_auth, "without": without},
    )


MEASURES = [
    Measure("P7", f"push + pull of {IMAGE_MB} MB, token auth vs none", "≤ 1.1×", at_most(1.1),
            _p7),
]  # fmt: skip
