"""The registry token keys kept in a Kubernetes Secret: the image's ``keys-secret`` process.

    keys-secret SECRET_NAME [init|rotate]

Run by the keys Job (deploy/kubernetes/base/keys-job.yaml), after the migrations, with a service
account that may get and patch that one Secret. It copies the Secret's files into
REGISTRY_KEYS_DIR (a private in-memory folder), runs ``manage.py registry_keys init`` (records
the Secret's CA in the database, never a second CA; imports signing.pem files of an earlier
version; issues a signing key if none is valid) or ``rotate``, and writes the folder back into the
Secret only when something changed. When the Secret holds no CA and the database records none,
``registry_keys create-ca`` makes one first and it is PATCHed into the Secret before ``init``
records it: a CA whose private key is nowhere is never recorded. The signing keys themselves
live in the database, encrypted with the KEK; the web and worker pods read them from there and
mount nothing (docs/registry-tokens.md).

Only the standard library: it talks to the API server as in-cluster clients do, with the pod's
service account token and CA (or KUBERNETES_API_URL, KUBERNETES_TOKEN_FILE, KUBERNETES_CA_FILE).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: The files of a key folder (registries/key_files.py); nothing else is copied either way.
KEY_FILES = ("ca.crt", "ca.key", "signing.pem", "signing-previous.pem")


def _api(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    base = os.environ.get("KUBERNETES_API_URL") or (
        f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    )
    token = Path(os.environ.get("KUBERNETES_TOKEN_FILE", ACCOUNT / "token")).read_text().strip()
    request = urllib.request.Request(  # noqa: S310 - the API server's https URL
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/merge-patch+json",
        },
    )
    context = None
    if base.startswith("https:"):
        context = ssl.create_default_context(
            cafile=os.environ.get("KUBERNETES_CA_FILE", str(ACCOUNT / "ca.crt"))
        )
    with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
        result: dict[str, object] = json.load(response)
        return result


def _read_folder(folder: Path) -> dict[str, str]:
    return {
        key: base64.b64encode((folder / key).read_bytes()).decode()
        for key in KEY_FILES
        if (folder / key).exists()
    }


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] not in ("init", "rotate")):
        print("usage: keys-secret SECRET_NAME [init|rotate]", file=sys.stderr)
        return 2
    name, action = argv[0], argv[1] if len(argv) == 2 else "init"
    namespace = os.environ.get("KUBERNETES_NAMESPACE") or (ACCOUNT / "namespace").read_text()
    path = f"/api/v1/namespaces/{namespace.strip()}/secrets/{name}"
    folder = Path(os.environ["REGISTRY_KEYS_DIR"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    data = _api("GET", path).get("data") or {}
    if not isinstance(data, dict):
        raise SystemExit(f"Secret {name}: its data is not a mapping")
    before = {key: str(value) for key, value in data.items() if key in KEY_FILES}
    for key, value in before.items():
        target = folder / key
        target.write_bytes(base64.b64decode(value))
        target.chmod(0o644 if key == "ca.crt" else 0o600)

    manage = [sys.executable, str(Path(__file__).resolve().parents[1] / "manage.py")]
    if action == "init" and "ca.key" not in before:
        # A new CA is stored in the Secret before `init` records it in the database: if this
        # PATCH fails or the pod dies, nothing is recorded and the next run starts afresh.
        subprocess.run([*manage, "registry_keys", "create-ca"], check=True)  # noqa: S603
        created = _read_folder(folder)
        if "ca.key" in created:
            _api("PATCH", path, {"data": created})
            print(f"Secret {name}: stored a new CA ({', '.join(sorted(created))})")
            before = created
    subprocess.run([*manage, "registry_keys", action], check=True)  # noqa: S603 - our command

    after = _read_folder(folder)
    if after == before:
        print(f"Secret {name}: unchanged")
        return 0
    _api("PATCH", path, {"data": after})
    print(f"Secret {name}: updated ({', '.join(sorted(after))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
