"""``python manage.py demo``: the product's main flow, end to end, against a running `make run`.

Creates an organization, a cluster, an agent token and a hosted queue through the service layer,
waits for the cluster's registry while showing its progress, fetches the job environment over
HTTP exactly as the agent hook does, checks that the registry demands and accepts our tokens,
then does what the first steps of a pipeline do: builds a small image (buildah from a Dockerfile
when buildah is installed, otherwise an OCI layout written here), logs in with the agent token,
pushes it to ``${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest`` and pulls it back with skopeo.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from clusters.interface import (
    AuditedCommand,
    agent_token_create,
    cluster_create,
    organization_get_or_create,
    queue_create,
)
from registries.conditions import error_detail
from registries.demo_image import BusyboxMissing, write_build_context, write_oci_layout
from registries.drivers import DriverError
from registries.drivers.distribution import DistributionDriver
from registries.models import REGISTRY_URL_VARIABLE, Registry, State


class Command(AuditedCommand):
    help = (
        "Create a cluster with a hosted queue, wait for its registry, print its agent environment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organization", default="demo", help="organization slug")
        parser.add_argument("--api-url", default="http://127.0.0.1:8000", help="the running API")
        parser.add_argument("--shape", default="LINUX_AMD64_2X4", help="instance shape")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
        parser.add_argument(
            "--builder",
            choices=["auto", "buildah", "skopeo"],
            default="auto",
            help="build with buildah, or write an OCI layout and push it with skopeo "
            "(auto: buildah when it is installed)",
        )

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
        organization, _ = organization_get_or_create(slug=slug)
        self.step(f"organization {organization.slug}")

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
        cluster = cluster_create(
            organization=organization, name=f"demo-{stamp}", description="Created by the demo"
        )
        self.step(f"cluster {cluster.name} ({cluster.pk})")

        token, secret = agent_token_create(cluster=cluster, description="demo agent")
        self.step(f"agent token {token.token_prefix}… (the secret is shown only now: {secret})")

        queue = queue_create(cluster=cluster, key="linux-small", instance_shape=options["shape"])
        self.step(f"hosted queue {queue.key} ({queue.instance_shape})")

        registry = self._wait_for_registry(cluster.pk, options["timeout"])
        self.step(f"registry {registry.namespace} is ready at {registry.url}")

        body = self._fetch_environment(api_url, secret, queue.key)
        self.stdout.write("\nThe job environment, as the agent's environment hook receives it:\n")
        self.stdout.write(body)

        url = _exported(body, REGISTRY_URL_VARIABLE)
        self.stdout.write(f"\n{REGISTRY_URL_VARIABLE}={url}\n")
        self.step(self._check_registry(url))
        with tempfile.TemporaryDirectory(prefix="controlplane-demo-") as workdir:
            PipelineSteps(self, Path(workdir), url, secret).run(options["builder"])
        organization_url = f"{api_url}/v2/organizations/{organization.slug}"
        tags = f"{organization_url}/clusters/{cluster.pk}/registry/repositories/base/tags"
        self.stdout.write(
            "\nIts tag and size, and the audit log of what the demo did, through the REST API "
            "(the README's usage example):\n"
            f"  TOKEN=$({_manage_env()}.venv/bin/python manage.py create_api_token "
            f"{organization.slug} you)\n"
            f'  curl -s -H "Authorization: Bearer $TOKEN" {tags}\n'
            f'  curl -s -H "Authorization: Bearer $TOKEN" {organization_url}/audit_events\n'
        )
        auth = '-H "Authorization: Bearer $TOKEN"'
        policy = (
            """-H 'Content-Type: application/json' -d '{"keep_newest": 1, "recent_hours": 0}'"""
        )
        self.stdout.write(
            "\nKeep the newest tag of each repository (base:build-1 goes), then collect the "
            "garbage (the README's retention example):\n"
            f"  REGISTRY={organization_url}/clusters/{cluster.pk}/registry\n"
            f"  curl -s -X PUT {auth} {policy} $REGISTRY/retention-policy\n"
            f"  curl -s -X POST {auth} $REGISTRY/retention-policy/dry-run\n"
            f"  curl -s -X POST {auth} $REGISTRY/cleanup\n"
            f"  make gc{_make_env(api_url)}\n"
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
                    f"Provisioning failed: {error_detail(registry)}\nFix the registry (is it "
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
                    hint = f"Last error: {error_detail(registry) or 'none'}."
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

    def _check_registry(self, url: str) -> str:
        """The same check provisioning makes, against the host jobs are given."""
        host = url.split("/", 1)[0]
        api_url = f"{urlsplit(settings.REGISTRY_URL).scheme or 'http'}://{host}"
        try:
            return DistributionDriver(api_url=api_url, public_host=host, timeout=5).check_api()
        except DriverError as exc:
            raise CommandError(f"The registry jobs are given does not work: {exc}") from exc


def _exported(shell: str, name: str) -> str:
    """The value of ``export NAME=$'...'`` in the agent environment (no quoting in a URL)."""
    prefix = f"export {name}=$'"
    for line in shell.splitlines():
        if line.startswith(prefix) and line.endswith("'"):
            return line[len(prefix) : -1]
    raise CommandError(f"The job environment has no {name}.")


def _required_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CommandError(
            f"{name} is not installed; the demo pushes and pulls with it. Install it "
            f"(`sudo apt-get install {name} busybox-static`) and run the demo again."
        )
    return path


class PipelineSteps:
    """What a pipeline's first steps do with the registry, with the tools a job would use."""

    def __init__(self, command: Command, workdir: Path, url: str, secret: str) -> None:
        self.command = command
        self.workdir = workdir
        self.host = url.split("/", 1)[0]
        self.reference = f"{url}/base:latest"
        self.secret = secret
        self.authfile = workdir / "auth.json"
        tls = urlsplit(settings.REGISTRY_URL).scheme == "https"
        self.tls = f"--tls-verify={'true' if tls else 'false'}"
        self.skopeo = _required_tool("skopeo")

    def run(self, builder: str) -> None:
        message = f"hello from {self.reference}"
        buildah = shutil.which("buildah") if builder == "auto" else None
        try:
            self._run(
                f"logged in to {self.host} with the agent token",
                self.skopeo, "login", self.tls, "--authfile", str(self.authfile),
                "--username", "buildkite-agent", "--password-stdin", self.host,
                input=self.secret,
            )  # fmt: skip
            self._push_previous_build()
            if builder == "buildah" or buildah:
                self._build_with_buildah(buildah or _required_tool("buildah"), message)
            else:
                self._build_with_skopeo(message)
            pulled = self.workdir / "pulled"
            self._run(
                f"pulled it back into {pulled}",
                self.skopeo, "copy", f"--src-{self.tls[2:]}", "--authfile", str(self.authfile),
                f"docker://{self.reference}", f"oci:{pulled}:latest",
            )  # fmt: skip
            inspected = self._run(
                "inspected it",
                self.skopeo, "inspect", self.tls, "--authfile", str(self.authfile),
                "--format", "{{.Digest}}", f"docker://{self.reference}",
            )  # fmt: skip
        except BusyboxMissing as exc:
            raise CommandError(str(exc)) from exc
        self.command.stdout.write(
            f"\n{self.reference} is {inspected.strip()}: pushed and pulled with the agent token."
        )

    def _build_with_buildah(self, binary: str, message: str) -> None:
        buildah = [
            binary, "--root", str(self.workdir / "root"),
            "--runroot", str(self.workdir / "run"), "--storage-driver", "vfs",
        ]  # fmt: skip
        dockerfile = write_build_context(self.workdir / "context", message)
        self._run(
            f"built {self.reference} from {dockerfile} with buildah",
            *buildah, "bud", "--isolation", "chroot", "-f", str(dockerfile),
            "-t", self.reference, str(dockerfile.parent),
        )  # fmt: skip
        self._run(
            f"pushed {self.reference}",
            *buildah, "push", self.tls, "--authfile", str(self.authfile),
            self.reference, f"docker://{self.reference}",
        )  # fmt: skip

    def _push_previous_build(self) -> None:
        """An earlier build of the image under ``base:build-1`` (other content, pushed first):
        what a pipeline leaves behind on every commit, for the README's retention example to
        delete and its garbage collection to free."""
        layout = self.workdir / "previous"
        write_oci_layout(layout, "hello from an earlier build", tag="build-1")
        previous = self.reference.rsplit(":", 1)[0] + ":build-1"
        self._run(
            f"pushed an earlier build, {previous}",
            self.skopeo, "copy", f"--dest-{self.tls[2:]}", "--authfile", str(self.authfile),
            f"oci:{layout}:build-1", f"docker://{previous}",
        )  # fmt: skip

    def _build_with_skopeo(self, message: str) -> None:
        layout = self.workdir / "image"
        digest = write_oci_layout(layout, message)
        self.command.step(f"wrote an OCI image layout for skopeo: {digest}")
        self._run(
            f"pushed {self.reference} with skopeo",
            self.skopeo, "copy", f"--dest-{self.tls[2:]}", "--authfile", str(self.authfile),
            f"oci:{layout}:latest", f"docker://{self.reference}",
        )  # fmt: skip

    def _run(self, done: str, *args: str | None, input: str | None = None) -> str:
        started = time.monotonic()
        argv = [str(arg) for arg in args]
        result = subprocess.run(  # noqa: S603 - the demo's own commands
            argv, input=input, capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            raise CommandError(
                f"`{' '.join(argv[:2])} ...` failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        self.command.step(f"{done} ({time.monotonic() - started:.1f}s)")
        return result.stdout


def _make_env(api_url: str) -> str:
    """The make variables ``make gc`` needs to find this stack where it is not the default one
    (as ``make run`` was given them)."""
    variables = []
    if (port := urlsplit(api_url).port) not in (None, 8000):
        variables.append(f"PORT={port}")
    if (registry_port := urlsplit(settings.REGISTRY_URL).port) not in (None, 5000):
        variables.append(f"REGISTRY_PORT={registry_port}")
    if Path(settings.VAR_DIR).resolve() != (Path(settings.BASE_DIR) / "var").resolve():
        variables.append(f"CONTROLPLANE_VAR_DIR={shlex.quote(str(settings.VAR_DIR))}")
    return "".join(f" {variable}" for variable in variables)


def _manage_env() -> str:
    """What a shell that did not come through make needs for ``manage.py`` to find this stack:
    development settings (make sets DJANGO_DEBUG=true), and its folder when it is not ``var/``."""
    env = "DJANGO_DEBUG=true "
    if Path(settings.VAR_DIR).resolve() != (Path(settings.BASE_DIR) / "var").resolve():
        env += f"CONTROLPLANE_VAR_DIR={shlex.quote(str(settings.VAR_DIR))} "
    return env
