"""Real container clients for integration tests: skopeo and buildah, as a CI job runs them.

buildah runs as root with no daemon: vfs storage and chroot isolation, its storage in the test's
own folder. Both talk plain HTTP to the registry on 127.0.0.1 (``--tls-verify=false``).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

from tests.support.integration import require_integration
from tests.support.processes import require_binary

AGENT_USER = "buildkite-agent"  # any user name: the password is what counts
TIMEOUT = 180


def run(args: list[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    require_integration(Path(args[0]).name)
    return subprocess.run(  # noqa: S603 - fixed tools, arguments from the tests
        args, input=input, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def creds(secret: str) -> str:
    return f"{AGENT_USER}:{secret}"


class Skopeo:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("skopeo")
        self.workdir = workdir

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *args], input=input)

    def push(
        self, layout: Path, reference: str, secret: str, *, tag: str = "latest", all: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Push the layout's image ``tag`` (with ``all``, an index and every image it names)."""
        return self(
            "copy", *(["--all"] if all else []), "--dest-tls-verify=false",
            "--dest-creds", creds(secret), f"oci:{layout}:{tag}", f"docker://{reference}",
        )  # fmt: skip

    def pull(
        self, reference: str, secret: str | None, into: Path
    ) -> subprocess.CompletedProcess[str]:
        auth = ["--src-creds", creds(secret)] if secret else ["--src-no-creds"]
        return self(
            "copy", "--src-tls-verify=false", *auth, f"docker://{reference}", f"oci:{into}:latest"
        )

    def inspect(self, reference: str, secret: str | None) -> subprocess.CompletedProcess[str]:
        auth = ["--creds", creds(secret)] if secret else ["--no-creds"]
        return self("inspect", "--tls-verify=false", *auth, f"docker://{reference}")

    def delete(self, reference: str, secret: str) -> subprocess.CompletedProcess[str]:
        return self(
            "delete", "--tls-verify=false", "--creds", creds(secret), f"docker://{reference}"
        )


class Buildah:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("buildah")
        self.storage = [
            "--root", str(workdir / "buildah-root"),
            "--runroot", str(workdir / "buildah-run"),
            "--storage-driver", "vfs",
        ]  # fmt: skip

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *self.storage, *args], input=input)

    def build(
        self, context: Path, tag: str, *, authfile: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        auth = ["--authfile", str(authfile)] if authfile else []
        return self(
            "bud", "--isolation", "chroot", "--tls-verify=false", *auth,
            "-f", str(context / "Dockerfile"), "-t", tag, str(context),
        )  # fmt: skip

    def push(self, tag: str, reference: str, *, authfile: Path) -> subprocess.CompletedProcess[str]:
        return self(
            "push", "--tls-verify=false", "--authfile", str(authfile), tag, f"docker://{reference}"
        )

    def login(self, host: str, secret: str, *, authfile: Path) -> subprocess.CompletedProcess[str]:
        """``buildah login --password-stdin``, as a pipeline step does with the agent token."""
        return self(
            "login", "--tls-verify=false", "--authfile", str(authfile),
            "--username", AGENT_USER, "--password-stdin", host,
            input=secret,
        )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a tool succeeded, showing what it said when it did not."""
    assert result.returncode == 0, (
        f"{result.args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


def layout_digest(layout: Path) -> str:
    """The manifest digest of the one image in an OCI layout."""
    return str(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def read_from_layout(layout: Path, path: str) -> bytes:
    """A file of the image in an OCI layout, as its last layer that has it holds it."""

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / digest.replace(":", "/")).read_bytes()

    manifest = json.loads(blob(layout_digest(layout)))
    found: bytes | None = None
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == path.lstrip("/") and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    found = extracted.read()
    assert found is not None, f"{path} is in no layer of {layout}"
    return found
