"""deploy/agent/hooks/environment, sourced by bash as buildkite-agent does, against the real API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clusters import services

pytestmark = pytest.mark.django_db(transaction=True)
HOOK = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "hooks" / "environment"
# Sourcing the hook, then printing the resulting environment as JSON.
SCRIPT = (
    f'source "{HOOK}" || exit $?; python3 -c "import json, os; print(json.dumps(dict(os.environ)))"'
)


def source_hook(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", SCRIPT],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_hook_exports_the_job_environment_and_never_runs_a_value(
    live_server, hosted_queue, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    hostile = f'it\'s $(touch {canary}) `touch {canary}` "x"\nline two'
    services.agent_environment_set(
        cluster=hosted_queue.cluster, name="HOSTILE", value=hostile, source="test"
    )
    _, secret = services.agent_token_create(cluster=hosted_queue.cluster, description="hook")
    token_file = tmp_path / "cluster-token"
    token_file.write_text(secret)

    result = source_hook(
        {
            "CONTROLPLANE_URL": live_server.url + "/",
            "CONTROLPLANE_AGENT_TOKEN_FILE": str(token_file),
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
        }
    )

    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["BUILDKITE_HOSTED_REGISTRY_URL"] == "127.0.0.1:5000/acme/0123456789ab"
    assert env["BUILDKITE_COMPUTE_TYPE"] == "hosted"
    assert env["BUILDKITE_CLUSTER_ID"] == str(hosted_queue.cluster.pk)
    assert env["BUILDKITE_CLUSTER_NAME"] == "Open Source"
    assert env["HOSTILE"] == hostile
    assert not canary.exists()


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
        "curl: (22) The requested URL returned error: 401\n"
        "controlplane environment hook: could not fetch the job environment from "
        f'{live_server.url}: {{"message":"Invalid, expired or revoked agent token."}}\n'
    )


def test_the_hook_says_what_to_set_when_it_is_not_configured() -> None:
    result = source_hook({"CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr == (
        "controlplane environment hook: CONTROLPLANE_URL is not set; "
        "set it in the agent's environment.\n"
    )
    result = source_hook(
        {"CONTROLPLANE_URL": "http://127.0.0.1:1", "CONTROLPLANE_AGENT_TOKEN_FILE": "/nonexistent"}
    )
    assert result.returncode == 1
    assert result.stderr == (
        "controlplane environment hook: no agent token; set CONTROLPLANE_AGENT_TOKEN or write "
        "it to /nonexistent.\n"
    )
