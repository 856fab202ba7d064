"""The agent hooks against a job that tries to reach the agent token or the credential (issue 13
review): the settings come from controlplane.conf next to the hooks, not from the environment a
pipeline step sets; curl ignores the job's proxies and curlrc; served variables are applied only
after the credential request, and only BUILDKITE_* ones; pre-exit revokes whatever shape the
auth file took; the agent's own registry logins are carried over; a refused credential request
fails the job."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from rest_framework import exceptions

from clusters import services
from registries.agent.views import JobCredentialsView
from registries.models import JobCredential
from tests.deploy.shell import DUMP, HOOKS, bash
from tests.support.http import StandIn
from tests.support.processes import closed_url

pytestmark = pytest.mark.integration  # every test runs the hooks in bash

REGISTRY_HOST = "127.0.0.1:5000"  # the hosted_queue fixture's BUILDKITE_HOSTED_REGISTRY_URL


def job(hooks: Path = HOOKS, between: str = "") -> str:
    """One job: the environment hook, the job's environment, `between`, the pre-exit hook."""
    return f'source "{hooks}/environment" || exit $?; {DUMP}; {between} source "{hooks}/pre-exit"'


def installed(tmp_path: Path, conf: str) -> Path:
    """The hooks installed in a folder of their own with `conf` as controlplane.conf."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name in ("environment", "pre-exit"):
        shutil.copy(HOOKS / name, hooks / name)
    (hooks / "controlplane.conf").write_text(conf)
    return hooks


@pytest.fixture
def secret(hosted_queue) -> str:
    return services.agent_token_create(cluster=hosted_queue.cluster, description="hook")[1]


@pytest.fixture
def agent(live_server, secret: str, tmp_path: Path) -> dict[str, str]:
    """The agent's environment, development style (no controlplane.conf next to the hooks)."""
    return {
        "CONTROLPLANE_URL": live_server.url,
        "CONTROLPLANE_AGENT_TOKEN": secret,
        "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
        "TMPDIR": str(tmp_path),
    }


@pytest.mark.django_db(transaction=True)
def test_with_a_settings_file_the_environment_cannot_redirect_the_agent_token(
    live_server, secret: str, impostor: StandIn, tmp_path: Path
) -> None:
    token_file = tmp_path / "cluster-token"
    token_file.write_text(secret)
    hooks = installed(
        tmp_path,
        f"# written by the agent image\nCONTROLPLANE_URL={live_server.url}\n"
        f"CONTROLPLANE_AGENT_TOKEN_FILE={token_file}\n",
    )
    # What a pipeline step's env: could set.
    step_env = {
        "CONTROLPLANE_URL": impostor.url,
        "CONTROLPLANE_AGENT_TOKEN_FILE": "/nonexistent",
        "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
        "TMPDIR": str(tmp_path),
    }

    result = bash(job(hooks), step_env)

    assert result.returncode == 0, result.stderr
    assert impostor.requests == []
    dumped = json.loads(result.stdout)
    assert dumped["DOCKER_CONFIG"].startswith(f"{tmp_path}/controlplane-job.")
    # pre-exit too reads the settings file: the credential is revoked at the real control plane.
    assert JobCredential.objects.get().revoked_at is not None
    assert result.stderr == ""


def test_the_settings_file_decides_whether_to_fail_closed(tmp_path: Path) -> None:
    hooks = installed(
        tmp_path,
        f"CONTROLPLANE_URL={closed_url()}\nCONTROLPLANE_AGENT_TOKEN=x\n"
        "BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED=true\n",
    )
    result = bash(job(hooks), {"BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED": "false"})
    assert result.returncode == 1
    assert "(BUILDKITE_HOSTED_REGISTRY_FAIL_CLOSED is set: failing the job)." in result.stderr


def test_a_settings_file_with_an_unknown_line_fails_the_job(tmp_path: Path) -> None:
    hooks = installed(tmp_path, "CONTROLPLANE_URL=http://127.0.0.1:1\n$(touch pwned)\n")
    result = bash(f'cd "{tmp_path}"; {job(hooks)}', {"CONTROLPLANE_AGENT_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr == (
        f"controlplane environment hook: {hooks}/controlplane.conf: not a setting of this hook: "
        "$(touch pwned)\n"
    )
    assert not (tmp_path / "pwned").exists()


@pytest.mark.django_db(transaction=True)
def test_the_jobs_proxies_and_curlrc_never_see_the_agent_token(
    agent: dict[str, str], impostor: StandIn, tmp_path: Path
) -> None:
    curl_home = tmp_path / "curl-home"
    curl_home.mkdir()
    (curl_home / ".curlrc").write_text(f'proxy = "{impostor.url}"\n')
    proxies = {
        name: impostor.url for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")
    }
    env = {**agent, **proxies, "CURL_HOME": str(curl_home), "HOME": str(curl_home)}

    result = bash(job(), env)

    assert result.returncode == 0, result.stderr
    assert impostor.requests == []
    assert "DOCKER_CONFIG" in json.loads(result.stdout)
    assert JobCredential.objects.get().revoked_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_served_proxy_is_never_applied_and_the_credential_request_goes_direct(
    agent: dict[str, str], hosted_queue, impostor: StandIn
) -> None:
    for name in ("ALL_PROXY", "HTTPS_PROXY"):
        services.agent_environment_set(
            cluster=hosted_queue.cluster, name=name, value=impostor.url, source="test"
        )

    result = bash(job(), agent)

    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout)
    assert "ALL_PROXY" not in dumped
    assert "HTTPS_PROXY" not in dumped
    assert "DOCKER_CONFIG" in dumped
    assert "refusing ALL_PROXY: only BUILDKITE_* names are taken" in result.stderr
    assert impostor.requests == []


@pytest.mark.django_db(transaction=True)
def test_pre_exit_revokes_the_credential_after_a_login_rewrote_the_auth_file(
    agent: dict[str, str],
) -> None:
    """`docker login` or `podman login` rewrites config.json pretty-printed (`"auth": "..."`)."""
    rewrite = (
        '/usr/bin/python3 -m json.tool "$REGISTRY_AUTH_FILE" > "$REGISTRY_AUTH_FILE.new" && '
        'mv "$REGISTRY_AUTH_FILE.new" "$REGISTRY_AUTH_FILE" && grep -q \'"auth": "\' '
        '"$REGISTRY_AUTH_FILE" || exit 9;'
    )
    result = bash(job(between=rewrite), agent)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert JobCredential.objects.get().revoked_at is not None
    assert not Path(json.loads(result.stdout)["DOCKER_CONFIG"]).exists()


def test_pre_exit_says_when_there_is_nothing_to_revoke(tmp_path: Path) -> None:
    folder = tmp_path / "controlplane-job.abcdefghij"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = bash(
        f'source "{HOOKS}/pre-exit"; echo "${{DOCKER_CONFIG-unset}}"',
        {"DOCKER_CONFIG": str(folder), "CONTROLPLANE_URL": "http://127.0.0.1:1"},
    )
    assert result.returncode == 0
    assert result.stdout == "unset\n"
    assert result.stderr == (
        f"controlplane pre-exit hook: warning: no registry credential to revoke in {folder}; if "
        "the job had one, it expires by itself.\n"
    )
    assert not folder.exists()


@pytest.mark.django_db(transaction=True)
def test_pre_exit_never_ends_a_set_e_caller_when_the_control_plane_is_gone(
    agent: dict[str, str],
) -> None:
    url = closed_url()
    script = f"set -e; {job(between=f'export CONTROLPLANE_URL={url};')}; echo survived"

    result = bash(script, agent)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("survived\n")
    assert result.stderr.endswith(
        "controlplane pre-exit hook: warning: could not revoke the job's registry credential "
        f"(no answer from {url}); it expires by itself.\n"
    )


def tools(folder: Path, *names: str) -> str:
    """A PATH holding only what the hooks need, and `names`."""
    folder.mkdir()
    for name in ("dirname", "mktemp", "chmod", "base64", "tr", "rm", "mv", "cat", *names):
        os.symlink(shutil.which(name, path="/usr/bin:/bin") or name, folder / name)
    return str(folder)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tool", ["python3", "jq", None])
def test_the_agents_own_logins_are_carried_over_into_the_jobs_auth_file(
    agent: dict[str, str], tmp_path: Path, tool: str | None
) -> None:
    docker_config = tmp_path / "agent-docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(
        json.dumps(
            {
                "auths": {"ghcr.io": {"auth": "Z2g6eA=="}, REGISTRY_HOST: {"auth": "c3RhbGU6eA=="}},
                "credsStore": "desktop",
            },
            indent=2,
        )
    )
    auth_file = tmp_path / "agent-auth.json"
    auth_file.write_text(json.dumps({"auths": {"quay.io": {"auth": "cTp4"}}}))
    env = {
        **agent,
        "PATH": tools(tmp_path / "bin", *([tool] if tool else [])),
        "DOCKER_CONFIG": str(docker_config),
        "REGISTRY_AUTH_FILE": str(auth_file),
    }

    result = bash(f'source "{HOOKS}/environment" || exit $?; cat "$REGISTRY_AUTH_FILE"', env)

    assert result.returncode == 0, result.stderr
    auths = json.loads(result.stdout)["auths"]
    ours = auths.pop(REGISTRY_HOST)
    assert ours["auth"] != "c3RhbGU6eA=="  # the job's credential, not the agent's old login
    if tool is None:
        assert auths == {}
        assert result.stderr == (
            "controlplane environment hook: warning: neither python3 nor jq is installed: the "
            f"logins in {docker_config}/config.json {auth_file} are not carried over into the "
            "job's auth file.\n"
        )
    else:
        assert auths == {"ghcr.io": {"auth": "Z2g6eA=="}, "quay.io": {"auth": "cTp4"}}
        assert result.stderr == ""
    assert json.loads((docker_config / "config.json").read_text())["credsStore"] == "desktop"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refusal", [exceptions.AuthenticationFailed, exceptions.PermissionDenied])
def test_a_refused_credential_request_fails_the_job(
    agent: dict[str, str], monkeypatch, tmp_path: Path, refusal: type[exceptions.APIException]
) -> None:
    """The environment answered, so the control plane is up: a 401 or 403 for the credential is
    a misconfiguration to fix, not an outage to ride out (docs/agents.md)."""

    def refuse(self, request):
        raise refusal("No.")

    monkeypatch.setattr(JobCredentialsView, "post", refuse)  # the live server is in-process

    result = bash(job(), agent)

    assert result.returncode == 1
    assert result.stdout == ""
    status = refusal.status_code
    assert result.stderr == (
        f"controlplane environment hook: {agent['CONTROLPLANE_URL']} refused the registry "
        f'credential request ({status}): {{"message":"No."}}\n'
    )
    assert list(tmp_path.iterdir()) == []
