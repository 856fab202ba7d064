"""The generated registry configuration (``manage.py registry_config``) opens no debug listener
unless asked, and then only on loopback (issue 13, item 6): Distribution's ``http.debug`` serves
pprof and expvar with no authentication."""

from __future__ import annotations

import datetime
import ipaddress
import os
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from controlplane.env import env, loopback_address
from registries.registry_config_rules import RegistryConfigError, upload_purging_age
from tests.support.processes import RegistryProcess, free_port, require_binary, two_free_ports
from tests.support.stack import ManagedProcess


def render(**options: str) -> dict[str, Any]:
    out = StringIO()
    call_command("registry_config", stdout=out, **options)
    config: dict[str, Any] = yaml.safe_load(out.getvalue())
    return config


def test_the_default_configuration_has_no_debug_listener(settings, tmp_path: Path) -> None:
    settings.REGISTRY_DEBUG_ADDR = ""

    config = render(addr="127.0.0.1:5000", storage_dir=str(tmp_path))

    assert "debug" not in config["http"]
    assert config["http"]["addr"] == "127.0.0.1:5000"


def test_the_setting_opens_it_on_loopback(settings, tmp_path: Path) -> None:
    settings.REGISTRY_DEBUG_ADDR = "127.0.0.1:5999"

    config = render(addr="127.0.0.1:5000", storage_dir=str(tmp_path))

    assert config["http"]["debug"] == {"addr": "127.0.0.1:5999"}


@pytest.mark.parametrize("addr", ["0.0.0.0:5001", "10.0.0.5:5001", ":5001", "registry:5001"])
def test_a_debug_listener_off_loopback_is_refused(settings, tmp_path: Path, addr: str) -> None:
    settings.REGISTRY_DEBUG_ADDR = addr

    with pytest.raises(CommandError) as refused:
        render(addr="127.0.0.1:5000", storage_dir=str(tmp_path))

    assert str(refused.value) == (
        f"Refusing the debug listener: {addr!r} is not on the loopback interface: use "
        "127.0.0.1:PORT (or [::1]:PORT), so that only the registry's own host reaches it."
    )


def test_the_setting_itself_refuses_a_public_address_at_start_up(monkeypatch) -> None:
    monkeypatch.setenv("REGISTRY_DEBUG_ADDR", "0.0.0.0:5001")

    with pytest.raises(ImproperlyConfigured, match="is not on the loopback interface"):
        env("REGISTRY_DEBUG_ADDR", "", loopback_address)


@pytest.mark.parametrize("addr", ["127.0.0.1:5001", "127.0.0.2:1", "[::1]:5001", "localhost:80"])
def test_loopback_addresses_are_accepted(addr: str) -> None:
    assert loopback_address(addr) == addr


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000"])
def test_an_address_without_a_valid_port_is_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        loopback_address(addr)


def debug_vars(addr: str) -> int | None:
    """The status of GET /debug/vars on ``addr``, or None when nothing listens there."""
    try:
        return requests.get(f"http://{addr}/debug/vars", timeout=2).status_code
    except requests.ConnectionError:
        return None


@pytest.mark.integration
def test_a_registry_started_from_the_default_configuration_has_no_debug_port(
    settings, tmp_path: Path
) -> None:
    settings.REGISTRY_DEBUG_ADDR = ""
    port = two_free_ports()
    out = StringIO()
    call_command(
        "registry_config",
        addr=f"127.0.0.1:{port}",
        storage_dir=str(tmp_path / "data"),
        stdout=out,
    )
    registry = RegistryProcess(tmp_path, port=port, config=out.getvalue()).start()
    try:
        assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 401  # it runs
        # Nothing answers where the debug listener used to be (the registry's port + 1).
        assert debug_vars(f"127.0.0.1:{port + 1}") is None
    finally:
        registry.stop()


@pytest.mark.integration
def test_a_registry_with_the_debug_setting_serves_it_on_loopback_only(
    settings, tmp_path: Path
) -> None:
    port, debug_port = free_port(), free_port()
    settings.REGISTRY_DEBUG_ADDR = f"127.0.0.1:{debug_port}"
    out = StringIO()
    call_command(
        "registry_config",
        addr=f"127.0.0.1:{port}",
        storage_dir=str(tmp_path / "data"),
        stdout=out,
    )
    registry = RegistryProcess(tmp_path, port=port, config=out.getvalue()).start()
    try:
        assert debug_vars(f"127.0.0.1:{debug_port}") == 200
    finally:
        registry.stop()


# --- The production options (issue 14, item 8) ------------------------------------------------

SECRET = 'a: "secret" # with\nYAML - [characters]'  # must come back exactly, structure intact


def render_with(settings, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    for name, value in overrides.items():
        setattr(settings, name, value)
    return render(addr="127.0.0.1:5000", storage_dir=str(tmp_path / "data"))


def refusal(settings, tmp_path: Path, **overrides: Any) -> str:
    with pytest.raises(CommandError) as refused:
        render_with(settings, tmp_path, **overrides)
    return str(refused.value)


def test_the_default_stores_on_disk_caches_in_memory_and_purges_uploads(
    settings, tmp_path: Path
) -> None:
    config = render_with(settings, tmp_path, REGISTRY_DEBUG_ADDR="")

    assert config["storage"] == {
        "filesystem": {"rootdirectory": str(tmp_path / "data")},
        "delete": {"enabled": True},
        "cache": {"blobdescriptor": "inmemory"},
        "maintenance": {
            "uploadpurging": {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False},
            # The replicas' runners flip it in their copy during a maintenance window.
            "readonly": {"enabled": False},
        },
    }
    assert config["http"]["draintimeout"] == "30s"
    assert "redis" not in config
    assert "tls" not in config["http"]
    assert [e["disabled"] for e in config["notifications"]["endpoints"]] == [True]
    assert "headers" not in config["notifications"]["endpoints"][0]


def test_s3_storage_with_an_endpoint_and_keys(settings, tmp_path: Path) -> None:
    config = render_with(
        settings,
        tmp_path,
        REGISTRY_STORAGE="s3",
        REGISTRY_S3_BUCKET="registry-bucket",
        REGISTRY_S3_REGION="eu-west-3",
        REGISTRY_S3_ENDPOINT="http://127.0.0.1:9000",
        REGISTRY_S3_ACCESS_KEY="AKIAEXAMPLE",
        REGISTRY_S3_SECRET_KEY=SECRET,
        REGISTRY_S3_ROOT_DIRECTORY="/registry",
    )

    assert "filesystem" not in config["storage"]
    assert config["storage"]["s3"] == {
        "region": "eu-west-3",
        "bucket": "registry-bucket",
        "regionendpoint": "http://127.0.0.1:9000",
        "secure": False,  # http:// endpoint
        "v4auth": True,
        "rootdirectory": "/registry",
        "accesskey": "AKIAEXAMPLE",
        "secretkey": SECRET,
    }
    assert config["storage"]["redirect"] == {"disable": True}


def test_s3_on_aws_without_keys_leaves_credentials_to_the_sdk(settings, tmp_path: Path) -> None:
    config = render_with(
        settings, tmp_path, REGISTRY_STORAGE="s3", REGISTRY_S3_BUCKET="b", REGISTRY_S3_REDIRECT=True
    )

    assert config["storage"]["s3"] == {
        "region": "us-east-1",
        "bucket": "b",
        "secure": True,
        "v4auth": True,
    }
    assert config["storage"]["redirect"] == {"disable": False}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"REGISTRY_STORAGE": "gcs"}, "REGISTRY_STORAGE='gcs' is not valid: use filesystem or s3."),
        ({"REGISTRY_STORAGE": "s3"}, "REGISTRY_STORAGE=s3 needs REGISTRY_S3_BUCKET."),
        (
            {"REGISTRY_STORAGE": "s3", "REGISTRY_S3_BUCKET": "b", "REGISTRY_S3_SECRET_KEY": SECRET},
            "Set both REGISTRY_S3_ACCESS_KEY and REGISTRY_S3_SECRET_KEY, or neither (the AWS "
            "SDK's own credentials: AWS_ACCESS_KEY_ID..., an instance or pod role).",
        ),
        (
            {"REGISTRY_STORAGE": "s3", "REGISTRY_S3_BUCKET": "b", "REGISTRY_S3_ENDPOINT": "s3:9"},
            "REGISTRY_S3_ENDPOINT is not an http:// or https:// URL.",
        ),
    ],
)
def test_s3_settings_that_cannot_work_are_refused(
    settings, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    assert refusal(settings, tmp_path, **overrides) == message


def test_the_redis_blob_descriptor_cache(settings, tmp_path: Path) -> None:
    config = render_with(
        settings, tmp_path, REGISTRY_REDIS_URL="redis://:p%40ss%3Aword@redis.internal:6380/3"
    )

    assert config["storage"]["cache"] == {"blobdescriptor": "redis"}
    assert config["redis"] == {
        "addr": "redis.internal:6380",
        "password": "p@ss:word",
        "db": 3,
        "dialtimeout": "2s",
        "readtimeout": "2s",
        "writetimeout": "2s",
        "pool": {"maxidle": 16, "maxactive": 64, "idletimeout": "300s"},
    }


def test_redis_without_password_port_or_db(settings, tmp_path: Path) -> None:
    config = render_with(settings, tmp_path, REGISTRY_REDIS_URL="redis://redis")

    assert (config["redis"]["addr"], config["redis"]["db"]) == ("redis:6379", 0)
    assert "password" not in config["redis"]


@pytest.mark.parametrize(
    "url",
    [
        "rediss://:hunter2@redis:6380/0",
        "unix:///run/redis.sock",
        "redis://:hunter2@redis:6380/zero",
        "redis://:hunter2@redis:port/0",
        "redis://admin:hunter2@redis/0",
    ],
)
def test_a_redis_url_distribution_cannot_use_is_refused_without_echoing_it(
    settings, tmp_path: Path, url: str
) -> None:
    message = refusal(settings, tmp_path, REGISTRY_REDIS_URL=url)

    assert message.startswith("REGISTRY_REDIS_URL ")
    assert "hunter2" not in message


def test_upload_purging_takes_its_age_and_interval(settings, tmp_path: Path) -> None:
    config = render_with(
        settings,
        tmp_path,
        REGISTRY_UPLOAD_PURGING_AGE="48h",
        REGISTRY_UPLOAD_PURGING_INTERVAL="1h30m",
    )

    assert config["storage"]["maintenance"]["uploadpurging"] == {
        "enabled": True,
        "age": "48h",
        "interval": "1h30m",
        "dryrun": False,
    }


@pytest.mark.parametrize("value", ["7d", "168", "", "1h 30m"])
def test_a_purging_duration_go_cannot_parse_is_refused(
    settings, tmp_path: Path, value: str
) -> None:
    assert refusal(settings, tmp_path, REGISTRY_UPLOAD_PURGING_AGE=value) == (
        f"REGISTRY_UPLOAD_PURGING_AGE={value!r} is not a duration such as 168h or 90m."
    )


def test_a_purging_age_shorter_than_a_push_may_run_is_refused(settings, tmp_path: Path) -> None:
    # The job credential (8h by default) outlives the push token (1h): a push may run 8h.
    assert refusal(settings, tmp_path, REGISTRY_UPLOAD_PURGING_AGE="7h59m") == (
        "REGISTRY_UPLOAD_PURGING_AGE=7h59m is shorter than 8h, the longest a push can run with "
        "one credential (the longer of REGISTRY_TOKEN_PUSH_TTL_SECONDS=3600 and "
        "REGISTRY_JOB_CREDENTIAL_TTL_SECONDS=28800): the registry would purge a slow push's "
        "upload while it runs. Set it to 8h or more."
    )
    assert refusal(
        settings,
        tmp_path,
        REGISTRY_UPLOAD_PURGING_AGE="90m",
        REGISTRY_JOB_CREDENTIAL_TTL_SECONDS=600,
        REGISTRY_TOKEN_PUSH_TTL_SECONDS=5430,
    ).startswith("REGISTRY_UPLOAD_PURGING_AGE=90m is shorter than 5430s, the longest")


def test_the_window_purges_at_the_age_the_configuration_says(settings, tmp_path: Path) -> None:
    """The maintenance window's own purge (``uploads_purge``) takes its age from
    ``upload_purging_age``: the same setting, parsed, and refused alike."""
    for value, expected in [
        ("168h", datetime.timedelta(days=7)),
        ("8h0m30s", datetime.timedelta(seconds=28830)),
    ]:
        config = render_with(settings, tmp_path, REGISTRY_UPLOAD_PURGING_AGE=value)

        assert config["storage"]["maintenance"]["uploadpurging"]["age"] == value
        assert upload_purging_age() == expected
    settings.REGISTRY_UPLOAD_PURGING_AGE = "1h"
    with pytest.raises(RegistryConfigError, match="is shorter than 8h"):
        upload_purging_age()


def test_a_drain_timeout_the_window_cannot_wait_for_is_refused(settings, tmp_path: Path) -> None:
    config = render_with(settings, tmp_path, REGISTRY_DRAIN_TIMEOUT="1m30s")
    assert config["http"]["draintimeout"] == "1m30s"
    assert refusal(settings, tmp_path, REGISTRY_DRAIN_TIMEOUT="2m") == (
        "REGISTRY_DRAIN_TIMEOUT=2m is not shorter than REGISTRY_GC_SWITCH_TIMEOUT_SECONDS=120: "
        "a replica restarting into read-only mode would not report in time."
    )
    assert refusal(settings, tmp_path, REGISTRY_DRAIN_TIMEOUT="30") == (
        "REGISTRY_DRAIN_TIMEOUT='30' is not a duration such as 168h or 90m."
    )


def test_notifications_go_to_the_configured_endpoint_with_the_token(
    settings, tmp_path: Path
) -> None:
    config = render_with(
        settings,
        tmp_path,
        REGISTRY_NOTIFICATIONS_URL="https://events.internal/registry/events",
        REGISTRY_NOTIFICATIONS_TOKEN="tok-123._~+/=",
    )

    assert config["notifications"]["endpoints"] == [
        {
            "name": "controlplane",
            "disabled": False,
            "url": "https://events.internal/registry/events",
            "headers": {"Authorization": ["Bearer tok-123._~+/="]},
            "timeout": "2s",
            "threshold": 5,
            "backoff": "1s",
            "ignore": {"mediatypes": ["application/octet-stream"]},
        }
    ]
    assert config["notifications"]["events"] == {"includereferences": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"REGISTRY_NOTIFICATIONS_URL": "https://events.internal/e"},
            "REGISTRY_NOTIFICATIONS_URL needs REGISTRY_NOTIFICATIONS_TOKEN: the registry sends "
            "it as 'Authorization: Bearer <token>' so that the receiver knows its events.",
        ),
        (
            {"REGISTRY_NOTIFICATIONS_TOKEN": "t"},
            "REGISTRY_NOTIFICATIONS_TOKEN is set but REGISTRY_NOTIFICATIONS_URL is not.",
        ),
        (
            {"REGISTRY_NOTIFICATIONS_URL": "https://e/e", "REGISTRY_NOTIFICATIONS_TOKEN": "a b"},
            "REGISTRY_NOTIFICATIONS_TOKEN must be printable ASCII without spaces.",
        ),
        (
            {"REGISTRY_NOTIFICATIONS_URL": "events:80", "REGISTRY_NOTIFICATIONS_TOKEN": "t"},
            "REGISTRY_NOTIFICATIONS_URL is not an http:// or https:// URL.",
        ),
    ],
)
def test_notification_settings_that_cannot_work_are_refused(
    settings, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    assert refusal(settings, tmp_path, **overrides) == message


def test_tls_when_a_certificate_and_key_are_given(settings, tmp_path: Path) -> None:
    config = render_with(
        settings,
        tmp_path,
        REGISTRY_TLS_CERTIFICATE="/etc/registry/tls.crt",
        REGISTRY_TLS_KEY="/etc/registry/tls.key",
    )

    assert config["http"]["tls"] == {
        "certificate": "/etc/registry/tls.crt",
        "key": "/etc/registry/tls.key",
        "minimumtls": "tls1.2",
    }


@pytest.mark.parametrize("given", ["REGISTRY_TLS_CERTIFICATE", "REGISTRY_TLS_KEY"])
def test_half_a_tls_pair_is_refused(settings, tmp_path: Path, given: str) -> None:
    assert refusal(settings, tmp_path, **{given: "/etc/registry/tls.pem"}) == (
        "Set both REGISTRY_TLS_CERTIFICATE and REGISTRY_TLS_KEY, or neither."
    )


def test_prometheus_metrics_open_the_debug_listener_on_loopback_next_to_the_registry(
    settings, tmp_path: Path
) -> None:
    config = render_with(
        settings, tmp_path, REGISTRY_DEBUG_ADDR="", REGISTRY_PROMETHEUS_ENABLED=True
    )

    assert config["http"]["debug"] == {
        "addr": "127.0.0.1:5001",
        "prometheus": {"enabled": True, "path": "/metrics"},
    }


def test_prometheus_metrics_use_the_configured_debug_address(settings, tmp_path: Path) -> None:
    config = render_with(
        settings,
        tmp_path,
        REGISTRY_DEBUG_ADDR="[::1]:9101",
        REGISTRY_PROMETHEUS_ENABLED=True,
    )

    assert config["http"]["debug"]["addr"] == "[::1]:9101"
    assert config["http"]["debug"]["prometheus"] == {"enabled": True, "path": "/metrics"}


def test_prometheus_metrics_never_open_a_public_debug_listener(settings, tmp_path: Path) -> None:
    message = refusal(
        settings, tmp_path, REGISTRY_DEBUG_ADDR="0.0.0.0:5001", REGISTRY_PROMETHEUS_ENABLED=True
    )

    assert message.startswith("Refusing the debug listener: '0.0.0.0:5001' is not on the loopback")


def test_secrets_are_written_to_the_file_only(
    settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_S3_BUCKET": "b",
        "REGISTRY_S3_ACCESS_KEY": "AKIAEXAMPLE",
        "REGISTRY_S3_SECRET_KEY": SECRET,
        "REGISTRY_REDIS_URL": "redis://:redis-password@redis/0",
        "REGISTRY_NOTIFICATIONS_URL": "https://events.internal/e",
        "REGISTRY_NOTIFICATIONS_TOKEN": "notify-token",
    }.items():
        setattr(settings, name, value)
    output = tmp_path / "config.yml"
    out, err = StringIO(), StringIO()

    with caplog.at_level("DEBUG"):
        call_command(
            "registry_config",
            addr="127.0.0.1:5000",
            storage_dir=str(tmp_path),
            output=str(output),
            stdout=out,
            stderr=err,
        )

    assert (out.getvalue(), err.getvalue()) == ("", "")
    assert output.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(output.read_text())
    assert config["storage"]["s3"]["secretkey"] == SECRET
    assert config["redis"]["password"] == "redis-password"
    assert config["notifications"]["endpoints"][0]["headers"] == {
        "Authorization": ["Bearer notify-token"]
    }
    logged = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    for secret in (SECRET, "redis-password", "notify-token"):
        assert secret not in logged


def test_the_output_file_replaces_a_readable_one_with_a_private_one(
    settings, tmp_path: Path
) -> None:
    output = tmp_path / "config.yml"
    output.write_text("old")
    output.chmod(0o644)

    call_command("registry_config", addr="127.0.0.1:5000", output=str(output), stdout=StringIO())

    assert output.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(output.read_text())["http"]["addr"] == "127.0.0.1:5000"
    assert [path.name for path in tmp_path.iterdir()] == ["config.yml"]


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "tls.crt", directory / "tls.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path


@pytest.mark.integration
def test_a_registry_with_the_tls_settings_serves_https(settings, tmp_path: Path) -> None:
    certificate, key = write_self_signed(tmp_path)
    settings.REGISTRY_TLS_CERTIFICATE, settings.REGISTRY_TLS_KEY = str(certificate), str(key)
    settings.REGISTRY_DEBUG_ADDR = ""
    port = free_port()
    url = f"https://127.0.0.1:{port}/v2/"
    config = tmp_path / "registry.yml"
    call_command(
        "registry_config",
        addr=f"127.0.0.1:{port}",
        storage_dir=str(tmp_path / "data"),
        output=str(config),
    )

    def answers(_process: ManagedProcess) -> bool:
        try:
            return requests.get(url, verify=str(certificate), timeout=1).status_code == 401
        except requests.ConnectionError:
            return False

    registry = ManagedProcess(
        "docker-registry",
        [
            require_binary("docker-registry", path=os.environ.get("DOCKER_REGISTRY_BIN")),
            "serve",
            str(config),
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
        log_path=tmp_path / "registry.log",
        is_ready=answers,
        cwd=tmp_path,
        ready_timeout=15,
    ).start()
    try:
        # Our token challenge over HTTPS, with the certificate given; plain HTTP is refused.
        assert requests.get(url, verify=str(certificate), timeout=5).status_code == 401
        assert requests.get(url.replace("https", "http"), timeout=5).status_code == 400
        assert "restricting TLS version to tls1.2 or higher" in registry.log()
    finally:
        registry.stop()
