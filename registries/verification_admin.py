"""The console's account of the verification after garbage collection: every failure it recorded
(its own list, filtered by kind, backend and collection), and on a registry's page the failures
of the last collection that verified its backend (``verification_section``). Read-only: a
failure is fixed by pushing the tag again or restoring from backup (docs/retention.md#verification),
not by editing its row."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from controlplane.admin import ReadOnlyAdmin
from registries.maintenance import VerificationFailure
from registries.models import Registry
from registries.services import registry_verification_latest

#: How many failures a registry's page lists (the rest are on the failures' own page).
SHOWN = 20


@admin.register(VerificationFailure)
class VerificationFailureAdmin(ReadOnlyAdmin):
    """What verifications found missing: the repository, tag and digest to push again."""

    list_display = [
        "registry", "repository", "tag", "kind", "digest", "parent_digest", "detail", "found_at",
    ]  # fmt: skip
    list_filter = ["kind", "collection__backend", "found_at"]
    search_fields = ["registry__namespace", "repository", "tag", "digest", "parent_digest"]
    list_select_related = ["registry"]
    raw_id_fields = ["collection", "registry"]


def verification_section(registry: Registry) -> SafeString:
    """The last verification of the registry's backend: when, and what it found missing here."""
    collection, failures = registry_verification_latest(registry, limit=SHOWN)
    if collection is None:
        return format_html("{}", "No garbage collection has verified this registry's backend yet.")
    summary = format_html(
        "Garbage collection of {} UTC ({}): {} tags and {} blobs checked on the backend, "
        "{} missing.",
        f"{collection.started_at or collection.created_at:%Y-%m-%d %H:%M:%S}",
        collection.get_state_display(),
        collection.tags_verified,
        collection.blobs_verified,
        collection.missing,
    )
    if not failures:
        return format_html("{} {}", summary, "Nothing of this registry is missing.")
    everything = reverse("admin:registries_verificationfailure_changelist")
    return format_html(
        '{}<table class="verification-failures"><tr><th>repository</th><th>tag</th>'
        "<th>kind</th><th>digest</th><th>referenced by</th><th>detail</th></tr>{}</table>"
        '<a href="{}?registry__id__exact={}&collection__id__exact={}">every failure</a>',
        summary,
        format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f.repository, f.tag, f.kind, f.digest, f.parent_digest, f.detail) for f in failures),
        ),
        everything,
        registry.pk,
        collection.pk,
    )
