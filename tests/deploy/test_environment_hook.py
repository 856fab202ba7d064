"""deploy/agent/hooks/environment, sourced by bash as buildkite-agent does, against the real API
(and against a stand-in server for answers the API never gives)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clusters import services
from tests.deploy.shell import DUMP, HOOKS, bash
from tests.support.processes import closed_url

pytestmark = pytest.mark.integration  # every test runs the hook in bash

# Source the hook, then print the resulting environment as JSON.
SCRIPT = f'source "{HOOKS}/environment" || exit $?; {DUMP}'


def source_hook(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return bash(SCRIPT, env)


@pytest.mark.django_db(transaction=True)
def test_the_hook_exports_the_job_environment_and_never_runs_a_value(
    live_server, hosted_queue, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    hostile = f'it\'s $(touch {canary}) `touch {canary}` "x" \\ \nline two\t\x1b[0m'
    services.agent_environment_set(
        cluster=hosted_queue.cluster, name="BUILDKITE_HOSTILE", value=hostile, source="test"
    )
    _, secret = services.agent_token_create(cluster=hosted_queue.cluster, description="hook")
    token_file = tmp_path / "cluster-token"
    token_file.write_text(secret)

    result = source_hook(
        {
            "CONTROLPLANE_URL": live_server.url + "/",
            "CONTROLPLANE_AGENT_TOKEN_FILE": str(token_file),
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
            "TMPDIR": str(tmp_path),  # where the job's auth folder goes
        }
    )

    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["BUILDKITE_HOSTED_REGISTRY_URL"] == "127.0.0.1:5000/acme/0123456789ab"
    assert env["BUILDKITE_COMPUTE_TYPE"] == "hosted"
    assert env["BUILDKITE_CLUSTER_ID"] == str(hosted_queue.cluster.pk)
    assert env["BUILDKITE_CLUSTER_NAME"] == "Open Source"
    assert env["BUILDKITE_HOSTILE"] == hostile
    assert not canary.exists()


@pytest.mark.django_db(transaction=True)
def test_the_hook_fails_the_job_with_the_servers_reason_on_a_bad_token(
    live_server, hosted_queue
) -> None:
    result = source_hook(
        {
            "CONTROLPLANE_URL": live_server.url,
            "CONTROLPLANE_AGENT_TOKEN": "bkct_wrong",
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
        }
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"controlplane environment hook: {live_server.url} answered 401: "
        '{"message":"Invalid, expired or revoked agent token."}\n'
    )


def test_the_hook_refuses_a_page_that_is_not_an_environment(impostor) -> None:
    result = source_hook({"CONTROLPLANE_URL": impostor.url, "CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr == (
        f"controlplane environment hook: {impostor.url} answered with 'text/html', not "
        "text/x-shellscript; is CONTROLPLANE_URL right?\n"
    )


def test_the_hook_evaluates_nothing_unless_every_line_is_an_export(
    impostor, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    impostor.headers = {"Content-Type": "text/x-shellscript; charset=utf-8"}
    impostor.body = f"export A=$'fine'\ntouch {canary}\n"
    result = source_hook({"CONTROLPLANE_URL": impostor.url, "CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr == (
        "controlplane environment hook: refusing the environment: unexpected line: "
        f"touch {canary}\n"
    )
    assert not canary.exists()


def test_the_hook_says_when_the_control_plane_is_unreachable(tmp_path: Path) -> None:
    """Issue 13 changed this: an unreachable control plane no longer fails every job (most never
    use the registry); the job log says so, and the job goes on without the registry's
    variables. BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED=true keeps the old behaviour."""
    url = closed_url()
    result = source_hook({"CONTROLPLANE_URL": url, "CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith(
        f"controlplane environment hook: warning: could not reach the control plane at {url}; "
        "the job goes on without the hosted registry's variables "
        "(set BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED=true to fail instead).\n"
    )
    env = json.loads(result.stdout)
    assert not {"BUILDKITE_HOSTED_REGISTRY_URL", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"} & set(env)
    assert "CONTROLPLANE_AGENT_TOKEN" not in env

    closed = source_hook(
        {
            "CONTROLPLANE_URL": url,
            "CONTROLPLANE_AGENT_TOKEN": "x",
            "BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED": "true",
        }
    )
    assert closed.returncode == 1
    assert closed.stderr.endswith(
        f"controlplane environment hook: could not reach the control plane at {url} "
        "(BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED is set: failing the job).\n"
    )


def test_the_hook_says_what_to_set_when_it_is_not_configured() -> None:
    result = source_hook({"CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr == (
        "controlplane environment hook: CONTROLPLANE_URL is not set; "
        f"write it to {HOOKS}/controlplane.conf.\n"
    )
    result = source_hook(
        {"CONTROLPLANE_URL": "http://127.0.0.1:1", "CONTROLPLANE_AGENT_TOKEN_FILE": "/nonexistent"}
    )
    assert result.returncode == 1
    assert result.stderr == (
        "controlplane environment hook: no agent token; set CONTROLPLANE_AGENT_TOKEN or write "
        "it to /nonexistent.\n"
    )
