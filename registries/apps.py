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
