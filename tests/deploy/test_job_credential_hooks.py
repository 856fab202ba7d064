"""The hooks hand each job a registry credential of its own (issue 13, items 1 and 4):
deploy/agent/hooks/environment exchanges the agent token for a job credential and writes the job's
auth file; deploy/agent/hooks/pre-exit deletes it and revokes the credential. Sourced by bash as
buildkite-agent does, against the live server (and a stand-in for answers it never gives)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from clusters import services
from registries.models import JobCredential
from tests.deploy.shell import DUMP, HOOKS, bash
from tests.support.http import StandIn

pytestmark = pytest.mark.integration  # every test runs the hooks in bash

# One job: the environment hook, the job's environment, the pre-exit hook, the environment after.
JOB = f'source "{HOOKS}/environment" || exit $?; {DUMP}; source "{HOOKS}/pre-exit"; {DUMP}'
REGISTRY_HOST = "127.0.0.1:5000"  # the hosted_queue fixture's BUILDKITE_HOSTED_REGISTRY_URL
JOB_ID = "0190a5d0-ac96-4e2b-8f5e-0d3a7c1b2e4f"


def run_job(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    result = bash(JOB, env)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def agent(live_server, hosted_queue, tmp_path: Path) -> dict[str, str]:
    """The agent's environment: the control plane, the agent token, the job's queue and id."""
    _, secret = services.agent_token_create(cluster=hosted_queue.cluster, description="hook")
    return {
        "CONTROLPLANE_URL": live_server.url,
        "CONTROLPLANE_AGENT_TOKEN": secret,
        "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
        "BUILDKITE_JOB_ID": JOB_ID,
        "TMPDIR": str(tmp_path),
    }


@pytest.mark.django_db(transaction=True)
def test_the_job_gets_an_auth_file_with_its_own_credential_and_never_the_agent_token(
    agent: dict[str, str], tmp_path: Path
) -> None:
    result, (job, after) = run_job(agent)

    assert result.returncode == 0, result.stderr
    folder, auth_file = Path(job["DOCKER_CONFIG"]), Path(job["REGISTRY_AUTH_FILE"])
    assert auth_file == folder / "config.json"
    assert folder.parent == tmp_path
    credential = JobCredential.objects.get()
    assert credential.job_id == JOB_ID
    # The file is gone after pre-exit; what it held was recorded by the job's own dump.
    assert "CONTROLPLANE_AGENT_TOKEN" not in job
    assert not any(agent["CONTROLPLANE_AGENT_TOKEN"] in value for value in job.values())
    assert "DOCKER_CONFIG" not in after
    assert "REGISTRY_AUTH_FILE" not in after
    assert not folder.exists()


@pytest.mark.django_db(transaction=True)
def test_the_auth_file_is_private_and_holds_a_basic_entry_for_the_registry_host(
    agent: dict[str, str],
) -> None:
    script = f'source "{HOOKS}/environment" || exit $?; stat -c "%a" "$DOCKER_CONFIG" '
    script += '"$REGISTRY_AUTH_FILE"; cat "$REGISTRY_AUTH_FILE"'
    result = bash(script, agent)

    assert result.returncode == 0, result.stderr
    folder_mode, file_mode, content = result.stdout.splitlines()
    assert (folder_mode, file_mode) == ("700", "600")
    auths = json.loads(content)["auths"]
    assert list(auths) == [REGISTRY_HOST]
    user, _, secret = base64.b64decode(auths[REGISTRY_HOST]["auth"]).decode().partition(":")
    assert user == "buildkite-job"
    assert secret.startswith("bkrc_")
    assert JobCredential.objects.get().secret_hash == JobCredential.hash_secret(secret)
    assert agent["CONTROLPLANE_AGENT_TOKEN"] not in content


@pytest.mark.django_db(transaction=True)
def test_pre_exit_revokes_the_credential(agent: dict[str, str]) -> None:
    result, _ = run_job(agent)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert JobCredential.objects.get().revoked_at is not None


@pytest.mark.django_db(transaction=True)
def test_the_agents_own_values_stand(agent: dict[str, str]) -> None:
    result, (job, _) = run_job(
        {**agent, "BUILDKITE_CLUSTER_ID": "set-by-the-agent", "BUILDKITE_CLUSTER_NAME": "Agent's"}
    )
    assert result.returncode == 0, result.stderr
    assert job["BUILDKITE_CLUSTER_ID"] == "set-by-the-agent"
    assert job["BUILDKITE_CLUSTER_NAME"] == "Agent's"
    assert job["BUILDKITE_HOSTED_REGISTRY_URL"] == f"{REGISTRY_HOST}/acme/0123456789ab"
    assert job["BUILDKITE_COMPUTE_TYPE"] == "hosted"


def test_the_hook_refuses_reserved_names_whatever_the_server_sends(
    impostor: StandIn, tmp_path: Path
) -> None:
    impostor.headers = {"Content-Type": "text/x-shellscript; charset=utf-8"}
    impostor.body = "".join(
        f"export {name}=$'{tmp_path}/evil'\n"
        for name in (
            "LD_PRELOAD",
            "BASH_ENV",
            "PROMPT_COMMAND",
            "BUILDKITE_AGENT_ACCESS_TOKEN",
            "CONTROLPLANE_URL",
            "DOCKER_CONFIG",
            "PATH",
            "ALL_PROXY",
            "FINE",
            "BUILDKITE_FINE",
        )
    )
    result, (job, _) = run_job(
        {"CONTROLPLANE_URL": impostor.url, "CONTROLPLANE_AGENT_TOKEN": "x", "TMPDIR": str(tmp_path)}
    )

    assert result.returncode == 0, result.stderr
    assert job["BUILDKITE_FINE"] == f"{tmp_path}/evil"
    # Only BUILDKITE_* names are taken (issue 13 review, item 2), and none of the agent's own.
    for name in ("LD_PRELOAD", "BASH_ENV", "PROMPT_COMMAND", "ALL_PROXY", "FINE"):
        assert name not in job
        assert (
            f"controlplane environment hook: refusing {name}: only BUILDKITE_* names are taken "
            "from the control plane.\n"
        ) in result.stderr
    assert "BUILDKITE_AGENT_ACCESS_TOKEN" not in job
    assert (
        "controlplane environment hook: refusing BUILDKITE_AGENT_ACCESS_TOKEN: a job must not "
        "receive it from the control plane.\n"
    ) in result.stderr
    assert job["CONTROLPLANE_URL"] == impostor.url
    assert job["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "DOCKER_CONFIG" not in job


def test_a_control_plane_answering_5xx_lets_the_job_go_on(impostor: StandIn) -> None:
    impostor.status = 503
    result, (job, _) = run_job({"CONTROLPLANE_URL": impostor.url, "CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 0
    assert result.stderr.startswith(
        f"controlplane environment hook: warning: {impostor.url} answered 503; the job goes on"
    )
    assert "BUILDKITE_HOSTED_REGISTRY_URL" not in job


@pytest.mark.parametrize("fail_closed", [False, True])
def test_no_credential_means_no_auth_file_and_the_job_goes_on_unless_fail_closed(
    impostor: StandIn, tmp_path: Path, fail_closed: bool
) -> None:
    """The environment answers but the credential request does not succeed (the stand-in
    answers 501 to a POST, as a control plane without the endpoint would answer 404)."""
    impostor.headers = {"Content-Type": "text/x-shellscript"}
    impostor.body = "export BUILDKITE_HOSTED_REGISTRY_URL=$'127.0.0.1:5000/acme/0123456789ab'\n"
    env = {
        "CONTROLPLANE_URL": impostor.url,
        "CONTROLPLANE_AGENT_TOKEN": "x",
        "TMPDIR": str(tmp_path),
    }
    if fail_closed:
        env["BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED"] = "true"

    result, dumps = run_job(env)

    if fail_closed:
        assert result.returncode == 1
        assert "(BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED is set: failing the job)." in result.stderr
        assert dumps == []
    else:
        assert result.returncode == 0
        assert "warning: " in result.stderr
        assert "answered 501 to the registry credential request" in result.stderr
        assert "the job goes on without a registry credential (BUILDKITE_HOSTED_REGISTRY_URL" in (
            result.stderr
        )
        assert "DOCKER_CONFIG" not in dumps[0]
        # No URL to push to without a credential for it (issue 13 review, item 6).
        assert "BUILDKITE_HOSTED_REGISTRY_URL" not in dumps[0]
    assert list(tmp_path.iterdir()) == []


def test_pre_exit_leaves_a_folder_it_did_not_make_alone(tmp_path: Path) -> None:
    theirs = tmp_path / "docker"
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")
    result = bash(
        f'source "{HOOKS}/pre-exit"; echo "$DOCKER_CONFIG"',
        {"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(theirs), "CONTROLPLANE_URL": "x"},
    )
    assert result.returncode == 0
    assert result.stdout == f"{theirs}\n"
    assert (theirs / "config.json").exists()
