"""Settings from the environment: embedded defaults, production requirements, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane import env

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = {
    "DJANGO_ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "CELERY_FILESYSTEM_DIR",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "REGISTRY_TOKEN_REALM",
    "REGISTRY_KEYS_DIR",
    "REGISTRY_STORAGE_DIR",
}


def test_a_missing_variable_takes_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTROLPLANE_TEST_VALUE", raising=False)
    assert env.env_int("CONTROLPLANE_TEST_VALUE", 7) == 7


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", "seven")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env.env_int("CONTROLPLANE_TEST_VALUE", 7)
    assert str(excinfo.value).startswith("CONTROLPLANE_TEST_VALUE='seven' is not valid: ")


@pytest.mark.parametrize("raw", ["0", "-5", "1.5"])
def test_an_integer_below_its_minimum_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", raw)
    with pytest.raises(ImproperlyConfigured, match=f"CONTROLPLANE_TEST_VALUE='{raw}' is not valid"):
        env.env_int("CONTROLPLANE_TEST_VALUE", 7, minimum=1)
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", "1")
    assert env.env_int("CONTROLPLANE_TEST_VALUE", 7, minimum=1) == 1


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("false", False)])
def test_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", raw)
    assert env.env_bool("CONTROLPLANE_TEST_VALUE", not value) is value


def test_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", "a.example, b.example,")
    assert env.env_list("CONTROLPLANE_TEST_VALUE", []) == ["a.example", "b.example"]


def run_settings(**environment: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL, "
        "settings.CACHES['default']['BACKEND'])"
    )
    clean = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration  # run_settings starts a Python process
@pytest.mark.parametrize("ttl", ["0", "-60"])
def test_a_job_credential_lifetime_must_be_positive(tmp_path: Path, ttl: str) -> None:
    result = run_settings(
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DJANGO_DEBUG="true",
        REGISTRY_JOB_CREDENTIAL_TTL_SECONDS=ttl,
    )
    assert result.returncode == 1
    assert (
        f"REGISTRY_JOB_CREDENTIAL_TTL_SECONDS='{ttl}' is not valid: must be an integer of at "
        "least 1"
    ) in result.stderr


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ('{"region": "eu-west"}', True),
        ("{}", True),
        ('["eu-west"]', False),  # a list: every placement failed on .items()
        ('{"replicas": 2}', False),
        ("{region: eu-west}", False),  # not JSON
    ],
)
def test_placement_labels_are_a_json_object_of_strings(
    monkeypatch: pytest.MonkeyPatch, raw: str, valid: bool
) -> None:
    monkeypatch.setenv("CONTROLPLANE_TEST_VALUE", raw)
    if valid:
        assert env.env("CONTROLPLANE_TEST_VALUE", {}, env.string_map) == json.loads(raw)
        return
    with pytest.raises(ImproperlyConfigured, match="CONTROLPLANE_TEST_VALUE=.* is not valid"):
        env.env("CONTROLPLANE_TEST_VALUE", {}, env.string_map)


@pytest.mark.integration  # run_settings starts a Python process
def test_a_process_does_not_start_with_malformed_placement_labels(tmp_path: Path) -> None:
    result = run_settings(
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DJANGO_DEBUG="true",
        REGISTRY_PLACEMENT_LABELS='["eu-west"]',
    )
    assert result.returncode == 1
    assert "REGISTRY_PLACEMENT_LABELS='[\"eu-west\"]' is not valid: expected a JSON object" in (
        result.stderr
    )


@pytest.mark.integration  # run_settings starts a Python process
def test_with_debug_on_the_project_runs_on_its_embedded_default(tmp_path: Path) -> None:
    result = run_settings(CONTROLPLANE_VAR_DIR=str(tmp_path), DJANGO_DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "filesystem://localhost//",
        "django.core.cache.backends.locmem.LocMemCache",
    ]
    assert (tmp_path / "celery" / "queue").is_dir()


@pytest.mark.integration  # run_settings starts a Python process
def test_database_url_and_redis_url_switch_to_the_production_components(tmp_path: Path) -> None:
    result = run_settings(
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DJANGO_DEBUG="true",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/controlplane",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "redis://127.0.0.1:6379/0",
        "django.core.cache.backends.redis.RedisCache",
    ]


PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "a-real-secret",
    "DJANGO_ALLOWED_HOSTS": "controlplane.example",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/controlplane",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "REGISTRY_TOKEN_REALM": "https://controlplane.example/registry/token",
    "REGISTRY_KEYS_DIR": "/run/secrets/registry-keys",
}


@pytest.mark.integration  # run_settings starts a Python process
@pytest.mark.parametrize(
    "missing",
    [
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "REGISTRY_TOKEN_REALM",
        "REGISTRY_KEYS_DIR",
    ],
)
def test_production_refuses_to_start_without_what_it_needs(tmp_path: Path, missing: str) -> None:
    environment = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = run_settings(CONTROLPLANE_VAR_DIR=str(tmp_path / "var"), **environment)
    assert result.returncode == 1
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {missing} must be set when "
        "DJANGO_DEBUG is false (see .env.example)." in result.stderr
    )


@pytest.mark.integration  # run_settings starts a Python process
def test_production_writes_nothing_to_the_local_state_folder(tmp_path: Path) -> None:
    result = run_settings(CONTROLPLANE_VAR_DIR=str(tmp_path / "var"), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.db.backends.postgresql"
    assert not (tmp_path / "var").exists()


@pytest.mark.integration  # run_settings starts a Python process
def test_with_no_variables_debug_is_off_and_every_missing_variable_is_named_at_once(
    tmp_path: Path,
) -> None:
    result = run_settings(CONTROLPLANE_VAR_DIR=str(tmp_path / "var"))
    assert result.returncode == 1
    assert (
        "django.core.exceptions.ImproperlyConfigured: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, "
        "DATABASE_URL, REDIS_URL, REGISTRY_TOKEN_REALM and REGISTRY_KEYS_DIR must be set when "
        "DJANGO_DEBUG is false (see .env.example)." in result.stderr
    )
    assert result.stderr.count("ImproperlyConfigured:") == 1
    # Stopped before the embedded default's SQLite file or broker folders were made.
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("raw", ["", "false", "0"])
@pytest.mark.integration  # run_settings starts a Python process
def test_only_django_debug_true_turns_debug_on(tmp_path: Path, raw: str) -> None:
    environment = {**PRODUCTION, "DJANGO_DEBUG": raw}
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    clean = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CONTROLPLANE_VAR_DIR": str(tmp_path),
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]


def test_the_missing_variables_message_names_them_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(env, "DEBUG", False)
    monkeypatch.setattr(env, "_missing", [])
    for name in ("CONTROLPLANE_TEST_A", "CONTROLPLANE_TEST_B", "CONTROLPLANE_TEST_C"):
        monkeypatch.delenv(name, raising=False)
        assert env.env(name, "default", required_in_production=True) == "default"
    env.env("CONTROLPLANE_TEST_A", "again", required_in_production=True)
    assert env.missing_required() == [
        "CONTROLPLANE_TEST_A",
        "CONTROLPLANE_TEST_B",
        "CONTROLPLANE_TEST_C",
    ]
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env.raise_for_missing()
    assert str(excinfo.value).startswith(
        "CONTROLPLANE_TEST_A, CONTROLPLANE_TEST_B and CONTROLPLANE_TEST_C must be set when "
        "DJANGO_DEBUG is false (see .env.example)."
    )
