"""A retention policy against the real registry, with images pushed by skopeo through the token
endpoint: the dry run lists a set, cleanup deletes exactly that set from the registry (its tag
list, ``skopeo inspect``) and from the inventory, with an audit row per deletion; protected,
recently pulled and shared-manifest tags stay and still pull. Age is simulated in the inventory
(``pushed_at``, ``last_pulled_at``), which is what the policy reads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from clusters.audit import AuditEvent
from registries.demo_image import write_oci_layout
from registries.inventory import Manifest, Tag
from registries.models import Registry
from registries.retention import RetentionRun
from tests.api import conftest as api_fixtures
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture
from tests.registries.test_deprovisioning import tags as registry_tags
from tests.registries.test_tag_deletion import push
from tests.registries.test_usage_scan import scan
from tests.support.containers import creds
from tests.support.images import add_index, add_variant, tagged

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

make_api = api_fixtures.make_api  # the REST API's clients, for organization acme

#: tag -> (content, pushed days ago, pulled days ago or None)
IMAGES = {
    "build-1": ("one", 40, None),  # old, never pulled: deleted
    "build-2": ("two", 39, 20),  # old, pulled long ago: deleted
    "build-3": ("three", 38, 0.1),  # beyond 2, but a running build pulled it 2.4 h ago: kept
    "build-4": ("four", 40, None),  # old, but on the manifest of v1.0: kept
    "build-5": ("five", 35, None),  # among the newest 2, but old and never pulled: deleted
    "v1.0": ("four", 60, None),  # protected
    "latest": ("six", 0, None),  # protected, and new
}


def test_cleanup_deletes_exactly_what_the_dry_run_listed(
    ready_cluster,
    skopeo,
    workdir: Path,
    make_api,
    scrape,  # noqa: F811 - the fixture
) -> None:
    access = ready_cluster("Open Source")
    api = make_api()
    now = timezone.now()
    for tag, (text, pushed, pulled) in IMAGES.items():
        push(skopeo, workdir, access, "base", tag, text)
        Tag.objects.filter(name=tag).update(
            pushed_at=now - timedelta(days=pushed),
            last_pulled_at=None if pulled is None else now - timedelta(days=pulled),
        )
    registry_path = f"/clusters/{access.cluster.pk}/registry"
    policy = {"keep_newest": 2, "delete_older_than_days": 30, "unless_pulled_within_days": 7}
    assert api.put(f"{registry_path}/retention-policy", policy).status_code == 200
    before = Registry.objects.get(pk=access.registry.pk).usage_bytes
    metrics_before = scrape()

    dry_run = api.post(f"{registry_path}/retention-policy/dry-run").json()
    cleanup = api.post(f"{registry_path}/cleanup")

    planned = [(d["tags"], d["reason"]) for d in dry_run["deletions"]]
    assert sorted(planned) == [
        (["build-1"], "beyond the newest 2 tags of base"),
        (["build-2"], "beyond the newest 2 tags of base"),
        (["build-5"], "pushed 35 days ago, not pulled in the last 7 days"),
    ]
    assert {(k["tag"], k["reason"].split(" ")[0]) for k in dry_run["kept"]} == {
        ("build-3", "pulled"),
        ("build-4", "shares"),
        ("v1.0", "protected"),
    }
    assert cleanup.status_code == 201, cleanup.content
    run = cleanup.json()
    assert run["state"] == "succeeded"
    assert run["errors"] == []
    assert run["deleted"] == dry_run["deletions"]
    # Gone from the registry and the inventory; the others are there and still pull whole.
    assert sorted(registry_tags(access.namespace, "base")) == [
        "build-3", "build-4", "latest", "v1.0"
    ]  # fmt: skip
    assert sorted(Tag.objects.values_list("name", flat=True)) == [
        "build-3", "build-4", "latest", "v1.0"
    ]  # fmt: skip
    gone = skopeo.inspect(f"{access.url}/base:build-1", access.secret)
    assert gone.returncode != 0
    assert "manifest unknown" in gone.stderr
    for tag in ("build-3", "build-4", "latest", "v1.0"):
        pulled = skopeo.pull(f"{access.url}/base:{tag}", access.secret, workdir / f"pull-{tag}")
        assert pulled.returncode == 0, pulled.stderr
    # One audit row a deleted manifest, and the run's own; the usage dropped.
    deletions = AuditEvent.objects.filter(type="REGISTRY_TAG_DELETED")
    assert sorted(tuple(e.data["tags"]) for e in deletions) == [
        ("build-1",), ("build-2",), ("build-5",)
    ]  # fmt: skip
    finished = AuditEvent.objects.get(type="REGISTRY_RETENTION_RUN_FINISHED")
    assert (finished.data["tags"], finished.data["run"]) == (3, run["id"])
    after = Registry.objects.get(pk=access.registry.pk).usage_bytes
    assert run["usage_bytes_before"] == before > after == run["usage_bytes_after"]
    assert run["freed_bytes"] == before - after
    metric = "controlplane_registry_retention_deleted_tags_total"
    assert delta(metrics_before, scrape(), metric, trigger="manual") == 3
    # A second run finds nothing more to delete.
    again = api.post(f"{registry_path}/cleanup").json()
    assert again["deleted"] == []
    assert RetentionRun.objects.count() == 2


def test_a_tag_pulled_between_the_plan_and_its_deletion_is_skipped(
    ready_cluster, skopeo, workdir: Path, make_api, monkeypatch
) -> None:
    """The run checks each group right before deleting it: a pull since the plan keeps it."""
    from registries.services.retention import runs

    access = ready_cluster("Open Source")
    api = make_api()
    for tag, text in (("old-a", "a"), ("old-b", "b")):
        push(skopeo, workdir, access, "base", tag, text)
    Tag.objects.update(pushed_at=timezone.now() - timedelta(days=40))
    api.put(f"/clusters/{access.cluster.pk}/registry/retention-policy", {"keep_newest": 0})
    planned = runs.retention_plan

    def plan_then_pull(*args, **kwargs):
        plan = planned(*args, **kwargs)
        Tag.objects.filter(name="old-a").update(last_pulled_at=timezone.now())
        return plan

    monkeypatch.setattr(runs, "retention_plan", plan_then_pull)

    run = api.post(f"/clusters/{access.cluster.pk}/registry/cleanup").json()

    assert [d["tags"] for d in run["deleted"]] == [["old-b"]]
    assert run["errors"] == [
        {"repository": "base", "tag": "old-a",
         "error": "skipped: pushed, pulled or moved since the plan"}
    ]  # fmt: skip
    assert registry_tags(access.namespace, "base") == ["old-a"]


@pytest.mark.parametrize("change", ["added", "moved"])
def test_a_tag_changed_in_the_registry_only_is_never_deleted_with_a_planned_group(
    ready_cluster, skopeo, workdir: Path, make_api, change: str
) -> None:
    """The inventory follows the registry by events, so it can be behind: a protected tag pushed
    onto a planned group's manifest (``added``), or a planned tag moved onto a protected tag's
    manifest (``moved``), in the registry only. Distribution deletes by digest, taking every tag
    on it; the run reads the registry's tags right before each deletion and skips the group,
    saying why, so the protected tag still pulls."""
    access = ready_cluster("Open Source")
    api = make_api()
    planned = push(skopeo, workdir, access, "base", "old-a", "a")
    push(skopeo, workdir, access, "base", "old-b", "b")
    protected = push(skopeo, workdir, access, "base", "v1", "c")
    Tag.objects.update(pushed_at=timezone.now() - timedelta(days=40))
    path = f"/clusters/{access.cluster.pk}/registry"
    api.put(f"{path}/retention-policy", {"keep_newest": 0})
    dry_run = api.post(f"{path}/retention-policy/dry-run").json()
    assert sorted(d["tags"] for d in dry_run["deletions"]) == [["old-a"], ["old-b"]]
    # The registry changes behind the inventory's back (no event reaches it in the tests).
    layout = workdir / f"registry-only-{change}"
    text, tag = ("a", "release-1") if change == "added" else ("c", "old-a")
    assert write_oci_layout(layout, text) == (planned if change == "added" else protected)
    pushed = skopeo.push(layout, f"{access.url}/base:{tag}", access.secret)
    assert pushed.returncode == 0, pushed.stderr

    run = api.post(f"{path}/cleanup").json()

    assert run["state"] == "succeeded"
    assert [d["tags"] for d in run["deleted"]] == [["old-b"]]
    why = (
        f"The registry's tags on {planned} differ from the inventory's (release-1 on it in the "
        "registry only): nothing was deleted."
        if change == "added"
        else f"Tag 'old-a' points to {protected} in the registry now, not {planned}: it moved "
        "since the plan."
    )
    assert run["errors"] == [{"repository": "base", "tag": "old-a", "error": why}]
    kept = ["old-a", "release-1", "v1"] if change == "added" else ["old-a", "v1"]
    assert sorted(registry_tags(access.namespace, "base")) == kept
    for name in kept:
        pulled = skopeo.pull(f"{access.url}/base:{name}", access.secret, workdir / f"pull-{name}")
        assert pulled.returncode == 0, pulled.stderr
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["old-a", "v1"]
    assert not AuditEvent.objects.filter(type="REGISTRY_TAG_DELETED", data__tags=["old-a"]).exists()


def test_a_member_of_a_kept_index_stays_though_its_own_tag_is_old(
    ready_cluster, skopeo, workdir: Path, make_api
) -> None:
    """A multi-arch index (protected ``v2``) and one of its members also tagged on its own
    (``amd64``): deleting that tag deletes the member's manifest by digest, and the index would
    no longer pull. The inventory comes from the usage scan of the real registry."""
    access = ready_cluster("Open Source")
    api = make_api()
    layout = workdir / "image"
    write_oci_layout(layout, "an index and its members")
    add_variant(layout, "s390x", label="other", architecture="s390x")
    index = add_index(layout, "multi", members=["latest", "s390x"])
    add_variant(layout, "old", label="old")
    for target, tag, everything in (("v2", "multi", True), ("amd64", "latest", False),
                                     ("old", "old", False)):  # fmt: skip
        pushed = skopeo.push(layout, f"{access.url}/app:{target}", access.secret, tag=tag,
                             all=everything)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
    scan(access.registry)
    assert tagged(layout, "latest") in Manifest.objects.get(digest=index).blobs
    Tag.objects.update(pushed_at=timezone.now() - timedelta(days=40))
    path = f"/clusters/{access.cluster.pk}/registry"
    api.put(f"{path}/retention-policy", {"delete_older_than_days": 30})

    dry_run = api.post(f"{path}/retention-policy/dry-run").json()
    run = api.post(f"{path}/cleanup").json()

    assert [d["tags"] for d in dry_run["deletions"]] == [["old"]]
    assert [(k["tag"], k["reason"]) for k in dry_run["kept"]] == [
        ("amd64", f"a member of the index v2 ({index[:19]}…), which is kept"),
        ("v2", "protected by the pattern 'v*'"),
    ]
    assert run["deleted"] == dry_run["deletions"]
    assert sorted(registry_tags(access.namespace, "app")) == ["amd64", "v2"]
    copied = skopeo(
        "copy", "--all", "--src-tls-verify=false", "--src-creds", creds(access.secret),
        f"docker://{access.url}/app:v2", f"oci:{workdir / 'pulled'}:v2",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr


def test_a_run_lists_a_repository_once_and_asks_again_only_for_each_groups_tags(
    ready_cluster, skopeo, workdir: Path, make_api, monkeypatch
) -> None:
    """Deleting k groups in a repository of n tags costs n + k·group ``HEAD`` requests (the
    listing, then each group's own tags right before its ``DELETE``), not n·k. Counted at the
    driver, on the real registry."""
    from registries.drivers.distribution import DistributionDriver

    access = ready_cluster("Open Source")
    api = make_api()
    names = ["old-1", "old-2", "old-3", "old-4", "v1", "latest"]
    for name in names:
        push(skopeo, workdir, access, "base", name, name)
    Tag.objects.update(pushed_at=timezone.now() - timedelta(days=40))
    api.put(f"/clusters/{access.cluster.pk}/registry/retention-policy", {"keep_newest": 0})
    heads: list[str] = []
    real = DistributionDriver._manifest_digest

    def counted(self, repository: str, tag: str, *, token: str) -> str | None:
        heads.append(tag)
        return real(self, repository, tag, token=token)

    monkeypatch.setattr(DistributionDriver, "_manifest_digest", counted)

    run = api.post(f"/clusters/{access.cluster.pk}/registry/cleanup").json()

    assert (run["state"], run["errors"]) == ("succeeded", [])
    assert sorted(t for d in run["deleted"] for t in d["tags"]) == names[:4]
    first = run["deleted"][0]["tags"][0]
    # n = 6 listed once; each of the 3 later groups (1 tag) asked once more.
    assert len(heads) == 6 + 3
    assert sorted(heads[:6]) == sorted(names)
    assert sorted(heads[6:]) == sorted(set(names[:4]) - {first})
    assert sorted(registry_tags(access.namespace, "base")) == ["latest", "v1"]
