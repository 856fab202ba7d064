"""The generated registry configuration (``manage.py registry_config``) opens no debug listener
unless asked, and then only on loopback (issue 13, item 6): Distribution's ``http.debug`` serves
pprof and expvar with no authentication."""

from __future__ import annotations

import socket
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from controlplane.env import env, loopback_address
from tests.support.processes import RegistryProcess, free_port


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


def two_free_ports() -> int:
    """A free port whose next port is free too (the old default put the debug listener there)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    pytest.fail("no two consecutive free ports")


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
