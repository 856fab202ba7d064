"""``python manage.py demo``: the product's main flow, end to end, against a running `make run`.

Creates an organization, a cluster, an agent token and a hosted queue through the service layer,
waits for the cluster's registry while showing its progress, then fetches the job environment
over HTTP exactly as the agent hook does, and checks that the registry URL answers ``/v2/``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from clusters import services as cluster_services
from clusters.models import Organization
from registries.drivers import DriverError
from registries.drivers.distribution import DistributionDriver
from registries.models import Registry, State
from registries.services import REGISTRY_URL_VARIABLE


class Command(BaseCommand):
    help = (
        "Create a cluster with a hosted queue, wait for its registry, print its agent environment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organization", default="demo", help="organization slug")
        parser.add_argument("--api-url", default="http://127.0.0.1:8000", help="the running API")
        parser.add_argument("--shape", default="LINUX_AMD64_2X4", help="instance shape")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            logging.disable(logging.INFO)  # the service's own log lines; -v 2 shows them
        try:
            self.run(options)
        finally:
            logging.disable(logging.NOTSET)

    def run(self, options: dict[str, Any]) -> None:
        api_url = options["api_url"].rstrip("/")
        self._check_api(api_url)

        slug = options["organization"]
        organization = Organization.objects.filter(slug=slug).first()
        if organization is None:
            organization = cluster_services.organization_create(slug=slug, name=slug.title())
        self.step(f"organization {organization.slug}")

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
        cluster = cluster_services.cluster_create(
            organization=organization, name=f"demo-{stamp}", description="Created by the demo"
        )
        self.step(f"cluster {cluster.name} ({cluster.pk})")

        token, secret = cluster_services.agent_token_create(
            cluster=cluster, description="demo agent"
        )
        self.step(f"agent token {token.token_prefix}… (the secret is shown only now: {secret})")

        queue = cluster_services.queue_create(
            cluster=cluster, key="linux-small", instance_shape=options["shape"]
        )
        self.step(f"hosted queue {queue.key} ({queue.instance_shape})")

        registry = self._wait_for_registry(cluster.pk, options["timeout"])
        self.step(f"registry {registry.namespace} is ready at {registry.url}")

        body = self._fetch_environment(api_url, secret, queue.key)
        self.stdout.write("\nThe job environment, as the agent's environment hook receives it:\n")
        self.stdout.write(body)

        endpoint, status = self._check_registry(registry.url)
        self.stdout.write(
            f"\n{REGISTRY_URL_VARIABLE}={registry.url}\n"
            f"GET {endpoint} answered {status}: the registry is up.\n"
        )

    def step(self, message: str) -> None:
        self.stdout.write(self.style.SUCCESS("✔ ") + message)
        self.stdout.flush()

    def _check_api(self, api_url: str) -> None:
        try:
            requests.get(f"{api_url}/", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise CommandError(
                f"The API at {api_url} does not answer ({exc}). Start the service with "
                "`make run` in another terminal, or pass --api-url."
            ) from exc

    def _wait_for_registry(self, cluster_id: uuid.UUID, timeout: float) -> Registry:
        started = time.monotonic()
        last_state, last_report = None, 0.0
        while True:
            elapsed = time.monotonic() - started
            registry = Registry.objects.filter(cluster_id=cluster_id).first()
            state = registry.state if registry else "absent"
            if state != last_state or elapsed - last_report >= 5:
                attempts = (
                    f", attempt {registry.attempts}" if registry and registry.attempts else ""
                )
                self.stdout.write(f"  … registry {state}{attempts} ({elapsed:.1f}s)")
                self.stdout.flush()
                last_state, last_report = state, elapsed
            if registry and registry.state == State.READY:
                return registry
            if registry and registry.state == State.FAILED:
                raise CommandError(
                    f"Provisioning failed: {registry.last_error}\nFix the registry (is it "
                    f"running at {settings.REGISTRY_URL}?), then retry it from the admin "
                    "(Registries, action 'Retry provisioning')."
                )
            if elapsed > timeout:
                if registry is None:
                    hint = "No registry was created for the cluster; see the service's log."
                elif state == State.PENDING and not registry.attempts:
                    hint = (
                        "No worker has taken the provisioning task: is `make run` running? "
                        "It starts the Celery worker."
                    )
                else:
                    hint = f"Last error: {registry.last_error or 'none'}."
                raise CommandError(f"The registry is still {state} after {timeout:.0f}s. {hint}")
            time.sleep(0.5)

    def _fetch_environment(self, api_url: str, secret: str, queue_key: str) -> str:
        response = requests.get(
            f"{api_url}/v3/agent/environment",
            params={"queue": queue_key, "format": "shell"},
            headers={"Authorization": f"Token {secret}"},
            timeout=10,
        )
        if response.status_code != 200:
            raise CommandError(
                f"GET /v3/agent/environment answered {response.status_code}: {response.text}"
            )
        return response.text

    def _check_registry(self, url: str) -> tuple[str, int]:
        """The same check provisioning makes, against the host jobs are given."""
        host = url.split("/", 1)[0]
        api_url = f"{urlsplit(settings.REGISTRY_URL).scheme or 'http'}://{host}"
        try:
            status = DistributionDriver(api_url=api_url, public_host=host, timeout=5).check_api()
        except DriverError as exc:
            raise CommandError(f"The registry jobs are given does not answer: {exc}") from exc
        return f"{api_url}/v2/", status
