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
