"""Buildkite's seed pipeline with no login step (issue 13, item 2): two jobs, each a fresh bash
that sources the agent's ``environment`` hook as buildkite-agent does, runs the step's commands
and then the ``pre-exit`` hook. Job 1 builds a base image with buildah (a Dockerfile with a
``RUN``) and pushes ``${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest``; job 2 builds ``FROM`` it and
pulls it with podman and skopeo. No command logs in: the hook's per-job auth file
(``DOCKER_CONFIG``/``REGISTRY_AUTH_FILE``) carries a job credential, and once ``pre-exit`` has
run that credential works no more. Real registry, live server, real clients; nothing mocked."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from registries.demo_image import write_build_context
from registries.models import JobCredential
from tests.support.containers import ok, read_from_layout
from tests.support.processes import require_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

HOOKS = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "hooks"
BAD_JOB_CREDENTIAL = "Invalid, expired or revoked job credential"

# Storage flags only (vfs, the job's own folders): how to build as root with no daemon here.
PRELUDE = """\
set -euo pipefail
W="$JOB_DIR"
buildah() { command buildah --root "$W/buildah-root" --runroot "$W/buildah-run" \\
  --storage-driver vfs "$@"; }
podman() { command podman --root "$W/podman-root" --runroot "$W/podman-run" \\
  --storage-driver vfs --cgroup-manager cgroupfs --events-backend file \\
  --tmpdir "$W/podman-tmp" "$@"; }
"""

STEP_1 = """\
buildah bud --isolation chroot --tls-verify=false -f context/Dockerfile \\
  -t "${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest" context
buildah push --tls-verify=false "${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest"
"""

STEP_2 = """\
mkdir -p context
cat > context/Dockerfile <<DOCKERFILE
FROM ${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest
RUN ["/bin/busybox", "sh", "-c", \\
  "cat /etc/hello.txt > /etc/step-2.txt && echo ran-on-base >> /etc/step-2.txt"]
DOCKERFILE
buildah bud --isolation chroot --tls-verify=false -f context/Dockerfile \\
  -t "${BUILDKITE_HOSTED_REGISTRY_URL}/app:latest" context
buildah push --tls-verify=false "${BUILDKITE_HOSTED_REGISTRY_URL}/app:latest"
podman pull --tls-verify=false "${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest"
skopeo copy --src-tls-verify=false "docker://${BUILDKITE_HOSTED_REGISTRY_URL}/app:latest" \\
  "oci:$W/app:latest"
"""


def run_job(
    job_dir: Path, agent_env: dict[str, str], command: str
) -> subprocess.CompletedProcess[str]:
    """One job as the agent runs it: the environment hook, the step, then pre-exit. Prints the
    auth file the job had, for the test to try its credential afterwards."""
    script = (
        f'source "{HOOKS}/environment" || exit $?\n'
        f"( {PRELUDE}{command}) || status=$?\n"
        'auth_file="$REGISTRY_AUTH_FILE"; echo "AUTH $(cat "$auth_file")"\n'
        f'source "{HOOKS}/pre-exit"\n'
        'test ! -e "$auth_file" && test -z "${DOCKER_CONFIG:-}" && echo "AUTH FILE GONE"\n'
        "exit ${status:-0}\n"
    )
    return subprocess.run(
        ["bash", "-c", script],
        cwd=job_dir,
        env={**agent_env, "JOB_DIR": str(job_dir), "HOME": str(job_dir / "home")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def job_secret(result: subprocess.CompletedProcess[str]) -> str:
    line = next(line for line in result.stdout.splitlines() if line.startswith("AUTH {"))
    (entry,) = json.loads(line.removeprefix("AUTH "))["auths"].values()
    return base64.b64decode(entry["auth"]).decode().partition(":")[2]


def test_the_seed_pipeline_pushes_and_pulls_with_no_login(
    live_server, ready_cluster, skopeo, workdir: Path
) -> None:
    for tool in ("buildah", "podman", "skopeo"):
        require_binary(tool)
    seed = ready_cluster("Seed")
    token_file = workdir / "cluster-token"
    token_file.write_text(seed.secret)
    assert "login" not in PRELUDE + STEP_1 + STEP_2

    def agent(job_id: str, name: str) -> tuple[Path, dict[str, str]]:
        job_dir = workdir / name
        (job_dir / "home").mkdir(parents=True)
        return job_dir, {
            "PATH": "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin",
            "CONTROLPLANE_URL": live_server.url,
            "CONTROLPLANE_AGENT_TOKEN_FILE": str(token_file),
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux",
            "BUILDKITE_JOB_ID": job_id,
            "TMPDIR": str(job_dir),
        }

    job_dir, env = agent("job-1", "step-1")
    write_build_context(job_dir / "context", "seeded base")
    with (job_dir / "context" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write(
            'RUN ["/bin/busybox", "sh", "-c", "echo built-in-job-1 >> /etc/hello.txt"]\n'
        )
    step_1 = run_job(job_dir, env, STEP_1)
    assert step_1.returncode == 0, f"stdout: {step_1.stdout}\nstderr: {step_1.stderr}"
    assert "AUTH FILE GONE" in step_1.stdout

    job_dir, env = agent("job-2", "step-2")
    step_2 = run_job(job_dir, env, STEP_2)
    assert step_2.returncode == 0, f"stdout: {step_2.stdout}\nstderr: {step_2.stderr}"
    assert "AUTH FILE GONE" in step_2.stdout

    # What job 2 built on job 1's image, and pulled back with skopeo.
    assert read_from_layout(job_dir / "app", "etc/step-2.txt") == (
        b"seeded base\nbuilt-in-job-1\nran-on-base\n"
    )
    # Each job had its own credential, never the agent token, and each is revoked now.
    secrets = {job_secret(step_1), job_secret(step_2)}
    assert len(secrets) == 2
    assert seed.secret not in step_1.stdout + step_2.stdout
    assert all(secret.startswith("bkrc_") for secret in secrets)
    credentials = JobCredential.objects.order_by("created_at")
    assert [c.job_id for c in credentials] == ["job-1", "job-2"]
    assert all(c.revoked_at is not None for c in credentials)
    for secret in secrets:
        refused = skopeo.inspect(f"{seed.url}/base:latest", secret)
        assert refused.returncode == 1
        assert BAD_JOB_CREDENTIAL in refused.stderr
    # The agent token still works: only the jobs' credentials ended.
    ok(skopeo.inspect(f"{seed.url}/base:latest", seed.secret))


def test_the_steps_by_hand_in_docs_agents_md_work_as_written(
    live_server, ready_cluster, workdir: Path
) -> None:
    """The sh block of docs/agents.md ("To try it by hand"), run as written but for the
    demo's URL, token and queue, and the scratch folder, which point at this test's."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    block = page.split("To try it by hand", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "login" not in block
    cluster = ready_cluster("By hand")
    script = (
        block.replace("http://127.0.0.1:8000", live_server.url)
        .replace("bkct_...", cluster.secret)
        .replace("=linux-small", "=linux")
        .replace("/tmp/ctx", str(workdir / "ctx"))  # noqa: S108 - the page's folder
    )
    # buildah's storage in the test's folder rather than /var/lib/containers.
    storage = workdir / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{workdir}/graph"\nrunroot = "{workdir}/run"\n'
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env={
            "PATH": "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "CONTAINERS_STORAGE_CONF": str(storage),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert f'"Name": "{cluster.url}/base"' in result.stdout  # skopeo inspect, after the push
    credential = JobCredential.objects.get()
    assert credential.revoked_at is not None
