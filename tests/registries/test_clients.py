"""Clients beyond docker's own habits, against a real Distribution registry that demands our
tokens, with the token endpoint in the live server (issue 13, item 3):

- ``oras`` (PyPI) asks the token endpoint for ``pull`` before an upload and pushes with that
  token; it must push an artifact and pull it back.
- Multi-arch indexes: ``buildah manifest push --all`` and ``skopeo copy --all`` move an image
  index and every platform image it names.
"""

from __future__ import annotations

import json
from pathlib import Path

import oras.client
import pytest
import requests

from registries.demo_image import write_build_context
from tests.support.containers import AGENT_USER, Buildah, creds, ok

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


def test_oras_pushes_an_artifact_and_pulls_it_back_with_the_agent_token(
    ready_cluster, workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a = ready_cluster("A")
    host = a.url.split("/")[0]
    target = f"{a.url}/artifact:v1"
    monkeypatch.chdir(workdir)
    Path("notes.txt").write_text("an artifact pushed by oras\n")
    client = oras.client.OrasClient(hostname=host, insecure=True)
    # What ``login`` does for the session, without writing a Docker config file.
    client.auth.set_basic_auth(AGENT_USER, a.secret)

    pushed = client.push(target=target, files=["notes.txt"])
    pulled = client.pull(target=target, outdir=str(workdir / "pulled"))

    assert pushed.status_code == 201, pushed.text
    assert [Path(path).name for path in pulled] == ["notes.txt"]
    assert (workdir / "pulled" / "notes.txt").read_text() == "an artifact pushed by oras\n"
    # oras asked only to pull before its upload, and was granted what the agent token may do.
    issued = [r for r in caplog.records if r.getMessage() == "registry.token.issued"]
    pull_scope = f"repository:{a.namespace}/artifact:pull"
    asked_pull_only = [r for r in issued if getattr(r, "requested", "") == pull_scope]
    assert asked_pull_only, [getattr(r, "requested", "") for r in issued]
    assert {getattr(r, "granted", "") for r in asked_pull_only} == {
        f"repository:{a.namespace}/artifact:pull,push,delete"
    }


def test_oras_cannot_push_into_another_clusters_namespace(
    ready_cluster, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = ready_cluster("A"), ready_cluster("B")
    host = a.url.split("/")[0]
    monkeypatch.chdir(workdir)
    Path("evil.txt").write_text("not yours\n")
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.auth.set_basic_auth(AGENT_USER, b.secret)

    with pytest.raises(ValueError, match="401|403|denied|unauthorized|Issue"):
        client.push(target=f"{a.url}/artifact:v1", files=["evil.txt"])

    assert (
        requests.get(f"http://{host}/v2/{a.namespace}/artifact/tags/list", timeout=5).status_code
        == 401
    )


def test_a_multi_arch_index_is_pushed_with_buildah_and_copied_with_skopeo(
    ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    authfile = workdir / "auth.json"
    buildah = Buildah(workdir / "job")
    ok(buildah.login(a.url.split("/")[0], a.secret, authfile=authfile))
    platforms = {"amd64": "built for amd64", "arm64": "built for arm64"}
    ok(buildah("manifest", "create", "localhost/multi:latest"))
    for arch, message in platforms.items():
        context = workdir / f"context-{arch}"
        write_build_context(context, message)
        ok(
            buildah(
                "bud",
                "--isolation",
                "chroot",
                "--arch",
                arch,
                "--os",
                "linux",
                "-f",
                str(context / "Dockerfile"),
                "-t",
                f"localhost/multi:{arch}",
                str(context),
            )
        )
        ok(buildah("manifest", "add", "localhost/multi:latest", f"localhost/multi:{arch}"))

    ok(
        buildah(
            "manifest",
            "push",
            "--all",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            "localhost/multi:latest",
            f"docker://{a.url}/multi:latest",
        )
    )
    ok(
        skopeo(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds",
            creds(a.secret),
            "--dest-creds",
            creds(a.secret),
            f"docker://{a.url}/multi:latest",
            f"docker://{a.url}/multi:copied",
        )
    )
    raw = ok(
        skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds(a.secret),
            f"docker://{a.url}/multi:copied",
        )
    ).stdout

    index = json.loads(raw)
    assert index["mediaType"] in {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
    assert sorted(
        (m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]
    ) == [("linux", "amd64"), ("linux", "arm64")]
    # Each platform image was copied too: its manifest answers by digest under the new tag's
    # repository, and holds its own content.
    for manifest in index["manifests"]:
        reference = f"{a.url}/multi@{manifest['digest']}"
        inspected = json.loads(
            ok(
                skopeo(
                    "inspect",
                    "--tls-verify=false",
                    "--creds",
                    creds(a.secret),
                    f"docker://{reference}",
                )
            ).stdout
        )
        assert inspected["Architecture"] == manifest["platform"]["architecture"]
