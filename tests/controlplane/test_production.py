"""The documented production settings are the secure ones: ``manage.py check --deploy`` finds
nothing to say about a process configured with the variables of docs/operations.md's "Running in
production" block, and something without its TLS settings. The block is read from the page, so
the documentation and this test cannot drift apart."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
# What the test process has that a production process must not inherit.
_DROPPED_PREFIXES = ("DJANGO_", "REGISTRY_", "CELERY_", "CONTROLPLANE_", "STATIC_")
_DROPPED = {"DATABASE_URL", "REDIS_URL"}
CLEAN_REPORT = "System check identified no issues (0 silenced)."


def documented_production_variables() -> dict[str, str]:
    """``NAME=value`` of the first ``sh`` block under "## Running in production" (comments off)."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Running in production\n", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block is not None, "no ```sh block under ## Running in production"
    variables = {}
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            variables[name] = value
    return variables


def manage(
    tmp_path: Path, variables: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CONTROLPLANE_VAR_DIR": str(tmp_path / "var"),
            **variables,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def production(tmp_path: Path) -> dict[str, str]:
    """The documented variables, with a real secret and a keys folder of the test's own."""
    return {
        **documented_production_variables(),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "REGISTRY_KEYS_DIR": str(tmp_path / "keys"),
    }


def test_the_documented_block_names_every_required_variable() -> None:
    # The names a production start with nothing set lists (tests/controlplane/test_env.py).
    required = {
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "REGISTRY_TOKEN_REALM",
        "REGISTRY_KEYS_DIR",
    }
    assert required <= documented_production_variables().keys()
    assert "DJANGO_DEBUG" not in documented_production_variables()  # unset is production


@pytest.mark.integration  # starts manage.py
def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path: Path) -> None:
    # The signing keys are in the database, which `check` without --database does not read.
    variables = production(tmp_path)
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "DEBUG")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == CLEAN_REPORT
    assert result.stderr == ""
    assert not (tmp_path / "var").exists()  # production writes nothing to the local state


@pytest.mark.integration  # starts manage.py
def test_check_deploy_warns_without_the_tls_settings(tmp_path: Path) -> None:
    variables = {
        name: value
        for name, value in production(tmp_path).items()
        if not name.startswith("DJANGO_SECURE_")
    }
    result = manage(tmp_path, variables, "check", "--deploy")
    report = result.stdout + result.stderr
    assert "security.W004" in report  # HSTS
    assert "security.W008" in report  # SSL redirect
