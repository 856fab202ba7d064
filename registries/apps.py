from django.apps import AppConfig


class RegistriesConfig(AppConfig):
    name = "registries"
    verbose_name = "Registries"

    def ready(self) -> None:
        # registries.tasks: the services enqueue the tasks by name, so every process that may
        # enqueue registers them (the import has no other use).
        import registries.tasks  # noqa: F401
        from clusters.interface import cluster_deleted, first_hosted_queue_created
        from registries import checks, receivers

        first_hosted_queue_created.connect(
            receivers.on_first_hosted_queue_created,
            dispatch_uid="registries.on_first_hosted_queue_created",
        )
        cluster_deleted.connect(
            receivers.on_cluster_deleted, dispatch_uid="registries.on_cluster_deleted"
        )
        checks.register()
        _register_health_and_metrics()
        _invalidate_hot_caches_on_change()


def _invalidate_hot_caches_on_change() -> None:
    """What the token endpoint caches of a principal (``registries.selectors``: its namespace
    while the registry is ready, its job credential) goes as soon as they change here. Job
    credentials are purged in bulk a day after they expired, when no cache holds them any more:
    their deletion is not listened to."""
    from clusters.interface import Cluster
    from controlplane.hotcache import invalidate_on_change, row_tag, secret_tag
    from registries.models import JobCredential, Registry

    def of_registry(registry: Registry) -> list[str]:
        return [] if registry.cluster_id is None else [row_tag(Cluster, registry.cluster_id)]

    def of_job_credential(credential: JobCredential) -> list[str]:
        return [row_tag(JobCredential, credential.pk), secret_tag(credential.secret_hash)]

    invalidate_on_change(Registry, of_registry, name="registry")
    invalidate_on_change(JobCredential, of_job_credential, name="job_credential", deletes=False)


def _register_health_and_metrics() -> None:
    """``/readyz`` checks the signing key and the registry too; ``/metrics`` counts registries
    by state when it is scraped (controlplane/health.py, controlplane/metrics.py)."""
    from controlplane import health, metrics
    from registries import selectors
    from registries.services import readiness_registry, readiness_signing_key

    health.register_check("signing_key", readiness_signing_key)
    health.register_check("registry", readiness_registry)
    metrics.register_reader(
        metrics.GaugeReader(
            "controlplane_registries",
            "Registries by state, read from the database when scraped.",
            "state",
            selectors.registries_by_state,
        )
    )
