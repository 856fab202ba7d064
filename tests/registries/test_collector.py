"""Distribution's garbage collector through ``registries.drivers.collector``, on a real registry
of the test's own (its own storage folder; stopped while it collects): images pushed with skopeo
through the token endpoint, one of them a multi-arch OCI index, some tags' manifests deleted by
digest. The storage folder shrinks by exactly the deleted images' blobs, and every kept tag,
the index's members among them, pulls completely. With ``--delete-untagged`` where it is safe,
an untagged manifest's blobs go too; where an index is tagged, the decision says why not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from registries.demo_image import write_oci_layout
from registries.drivers.collector import CONFIG_ERROR_REDACTED, CollectorError, garbage_collect
from registries.drivers.storage import storage_bytes
from registries.maintenance_selectors import delete_untagged_decision
from registries.retention import RetentionPolicy
from registries.services.usage_scan import registry_usage_scan
from tests.registries.conftest import ClusterAccess
from tests.support.containers import Skopeo, creds, ok
from tests.support.images import add_index, add_variant, unique_blobs
from tests.support.processes import RegistryProcess, require_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


@pytest.fixture
def own_registry(workdir: Path) -> Iterator[RegistryProcess]:
    """A registry of this test's own: the collector deletes from its storage."""
    registry = RegistryProcess(workdir).start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_settings(settings, own_registry: RegistryProcess):
    """``ready_cluster`` provisions on the test's own registry, not the session's."""
    settings.REGISTRY_URL = own_registry.url
    settings.REGISTRY_PUBLIC_HOST = own_registry.host
    return settings


def image(workdir: Path, name: str) -> Path:
    layout = workdir / name
    write_oci_layout(layout, f"collector test image {name}")
    return layout


def multi_arch(workdir: Path) -> Path:
    """An OCI layout tagged ``index``: an index of an amd64 and an arm64 image."""
    layout = workdir / "multi"
    write_oci_layout(layout, "collector test index", tag="amd64")
    add_variant(layout, "arm64", label="arm64", architecture="arm64", of="amd64")
    add_index(layout, "index", members=["amd64", "arm64"])
    return layout


def pulled(skopeo: Skopeo, access: ClusterAccess, reference: str, into: Path) -> dict[str, int]:
    """Pull ``reference`` (an index with every member) into a folder: ``{digest: size}`` of
    everything fetched, each file checked against its digest."""
    ok(
        skopeo(
            "copy", "--all", "--src-tls-verify=false", "--src-creds", creds(access.secret),
            f"docker://{access.url}/{reference}", f"dir:{into}",
        )
    )  # fmt: skip
    found = {}
    for path in into.iterdir():
        if path.name == "version":
            continue
        data = path.read_bytes()
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if path.name != "manifest.json":
            assert path.name.removesuffix(".manifest.json") == digest.removeprefix("sha256:")
        found[digest] = len(data)
    return found


def policy_deleting_untagged(access: ClusterAccess) -> None:
    RetentionPolicy.objects.create(
        organization=access.cluster.organization, cluster=None, delete_untagged=True
    )


def test_a_collection_frees_exactly_the_deleted_images_and_every_kept_tag_pulls(
    ready_cluster, skopeo: Skopeo, workdir: Path, own_registry: RegistryProcess
) -> None:
    access = ready_cluster("Open Source")
    layouts = {name: image(workdir, name) for name in ("one", "two", "three")}
    for name, layout in layouts.items():
        ok(skopeo.push(layout, f"{access.url}/app:{name}", access.secret))
    index = multi_arch(workdir)
    ok(skopeo.push(index, f"{access.url}/multi:index", access.secret, tag="index", all=True))
    ok(skopeo.delete(f"{access.url}/app:two", access.secret))  # its manifest, by digest
    deleted = unique_blobs(layouts["two"], "latest")
    assert len(deleted) == 3  # manifest, config, layer: none shared with a kept image
    # With a tagged index on the backend, untagged manifests are kept (a policy would allow it).
    policy_deleting_untagged(access)
    assert registry_usage_scan(registry_id=access.registry.pk) is not None
    config = str(own_registry.config_path)
    allowed, reason = delete_untagged_decision(access.registry.backend_id, config_path=config)
    assert (allowed, reason.split(":")[0]) == (False, f"{access.namespace}/multi")
    assert "distribution#3004, distribution#3178" in reason

    own_registry.stop()
    before = storage_bytes(config)
    lines: list[str] = []
    result = garbage_collect(config, delete_untagged=allowed, on_line=lines.append)

    assert (result.blobs_deleted, result.manifests_deleted, result.returncode) == (3, 0, 0)
    assert "3 blobs and 0 manifests eligible for deletion" in result.output_tail
    eligible = {line.split(": ")[1] for line in lines if line.startswith("blob eligible")}
    assert eligible == set(deleted)
    assert set(result.deleted_blobs) == set(deleted)
    after = storage_bytes(config)
    assert before is not None
    assert after is not None
    assert before - after == sum(deleted.values())

    own_registry.start()
    for name in ("one", "three"):
        fetched = pulled(skopeo, access, f"app:{name}", workdir / f"pulled-{name}")
        assert fetched == unique_blobs(layouts[name], "latest")
    fetched = pulled(skopeo, access, "multi:index", workdir / "pulled-index")
    assert fetched == unique_blobs(index, "index")  # the index, both members, their blobs
    gone = skopeo.inspect(f"{access.url}/app:two", access.secret)
    assert gone.returncode != 0
    assert "manifest unknown" in gone.stderr


def test_delete_untagged_where_safe_deletes_an_untagged_manifests_blobs(
    ready_cluster, skopeo: Skopeo, workdir: Path, own_registry: RegistryProcess
) -> None:
    access = ready_cluster("Open Source")
    first, second, kept = image(workdir, "first"), image(workdir, "second"), image(workdir, "kept")
    ok(skopeo.push(first, f"{access.url}/app:ci", access.secret))
    ok(skopeo.push(second, f"{access.url}/app:ci", access.secret))  # first is untagged now
    ok(skopeo.push(kept, f"{access.url}/base:v1", access.secret))
    policy_deleting_untagged(access)
    assert registry_usage_scan(registry_id=access.registry.pk) is not None
    config = str(own_registry.config_path)
    allowed, reason = delete_untagged_decision(access.registry.backend_id, config_path=config)
    assert (allowed, reason.split(":")[0]) == (True, "safe")
    untagged = unique_blobs(first, "latest")
    own_registry.stop()
    before = storage_bytes(config)
    assert before is not None

    # Without the flag, an untagged manifest still references its blobs: nothing goes.
    kept_all = garbage_collect(config, delete_untagged=False)
    assert (kept_all.blobs_deleted, kept_all.manifests_deleted) == (0, 0)
    assert storage_bytes(config) == before

    result = garbage_collect(config, delete_untagged=allowed)

    assert (result.blobs_deleted, result.manifests_deleted) == (3, 1)
    assert f"manifest eligible for deletion: {next(iter(untagged))}" in result.output_tail
    freed = before - (storage_bytes(config) or 0)
    # Its blobs, and two link files naming its digest: the repository's revision of it, and
    # its entry in the history of tag ci.
    assert freed == sum(untagged.values()) + 2 * len(next(iter(untagged)))
    own_registry.start()
    assert pulled(skopeo, access, "app:ci", workdir / "ci") == unique_blobs(second, "latest")
    assert pulled(skopeo, access, "base:v1", workdir / "v1") == unique_blobs(kept, "latest")


def test_a_failing_collector_says_why_and_an_empty_storage_is_nothing_to_collect(
    workdir: Path, own_registry: RegistryProcess, settings
) -> None:
    require_binary("docker-registry")
    own_registry.stop()
    empty = str(own_registry.config_path)  # nothing was ever pushed to it

    nothing = garbage_collect(empty, delete_untagged=True)

    assert (nothing.blobs_deleted, nothing.manifests_deleted) == (0, 0)
    assert nothing.output_tail.endswith("Path not found: /docker/registry/v2/repositories")

    missing = workdir / "missing.yml"
    with pytest.raises(CollectorError) as failed:
        garbage_collect(str(missing), delete_untagged=False)
    message = str(failed.value)
    assert message.startswith(f"garbage-collect on {missing} exited with status 1. Its output")
    assert f"configuration error: open {missing}: no such file or directory" in message
    assert message.endswith("blobs no manifest references may already be gone, none that one does.")

    # A configuration Distribution cannot parse: its message quotes the value (a secret, here).
    broken = workdir / "broken.yml"
    broken.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir}\n"
        "redis:\n  db: hunter2secret\n"
    )  # Distribution says: line 6: cannot unmarshal !!str `hunter2...` into int
    shown: list[str] = []
    with pytest.raises(CollectorError) as unparsable:
        garbage_collect(str(broken), delete_untagged=False, on_line=shown.append)
    assert "configuration error: (the rest is not shown" in str(unparsable.value)
    assert "hunter2" not in str(unparsable.value) + "\n".join(shown)
    assert shown == [CONFIG_ERROR_REDACTED]

    with pytest.raises(CollectorError) as stopped:
        garbage_collect(empty, delete_untagged=False, timeout=0.001)
    assert "was stopped after 0.001s (REGISTRY_GC_TIME_LIMIT_SECONDS)" in str(stopped.value)

    settings.REGISTRY_GC_BINARY = str(workdir / "no-such-registry")
    with pytest.raises(CollectorError) as absent:
        garbage_collect(empty, delete_untagged=False)
    assert str(absent.value) == (
        f"Cannot run {workdir}/no-such-registry: No such file or directory. Install "
        "Distribution on the maintenance worker (Debian: docker-registry) or set "
        "REGISTRY_GC_BINARY."
    )
