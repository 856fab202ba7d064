"""Control characters that a request puts into a log line are escaped: a value cannot end the
line and forge the next one, nor send escape sequences to an operator's terminal."""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.test import Client

from controlplane.logging import KeyValueFormatter


def _line(message: str, **extra: object) -> str:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return KeyValueFormatter().format(record)


def test_the_message_and_every_value_have_their_control_characters_escaped() -> None:
    line = _line(
        "Not Found: /a\nforged INFO line\x1b[31m",
        path="/x\n2026-01-01 INFO forged",
        scope="repository:a\x1b[2Jb:pull\x00",
        other="bell\x07 del\x7f next\x85 sep\u2028 rtl\u202e",
    )

    assert "\n" not in line
    assert "\x1b" not in line
    assert line.endswith(
        r"test Not Found: /a\nforged INFO line\x1b[31m"
        r' path="/x\n2026-01-01 INFO forged" scope="repository:a\x1b[2Jb:pull\x00"'
        r' other="bell\x07 del\x7f next\x85 sep\u2028 rtl\u202e"'
    )


def test_a_backslash_in_a_value_is_quoted_so_an_escape_cannot_be_imitated() -> None:
    assert _line("event", value=r"a\nb").endswith(r'event value="a\\nb"')
    assert _line("event", value="plain").endswith("event value=plain")


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "test", logging.ERROR, __file__, 1, "failed\n", None, __import__("sys").exc_info()
        )
    line = KeyValueFormatter().format(record)
    assert r"failed\n" in line
    assert "\nTraceback (most recent call last):\n" in line


@pytest.mark.django_db
def test_a_404_path_with_a_newline_and_an_escape_sequence_is_logged_on_one_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.setFormatter(KeyValueFormatter())
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/v2/nothing%0A2026-01-01 ERROR forged%1B%5B31m")
    assert response.status_code == 404
    assert r"Not Found: /v2/nothing\n2026-01-01 ERROR forged\x1b[31m" in caplog.text
    assert "\x1b" not in caplog.text
    assert caplog.text.count("\n") == 1


def test_over_http_a_forged_line_never_reaches_the_log(
    live_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.setFormatter(KeyValueFormatter())
    path = urllib.parse.quote("/v2/nothing\n2026-01-01 ERROR forged\x1b[31m")
    scope = "repository:acme/x\x1b[31mred:pull"
    token_url = f"{live_server.url}/registry/token?" + urllib.parse.urlencode(
        {"service": "hosted-registry", "scope": scope}
    )
    with caplog.at_level(logging.INFO):
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(live_server.url + path, timeout=10)  # noqa: S310 - a test URL
        with urllib.request.urlopen(token_url, timeout=10) as issued:  # noqa: S310 - a test URL
            assert issued.status == 200

    assert not_found.value.code == 404
    lines = [line for line in caplog.text.splitlines() if line]
    assert any(
        r"Not Found: /v2/nothing\n2026-01-01 ERROR forged\x1b[31m status_code=404" in line
        for line in lines
    ), caplog.text
    assert any(r'requested="repository:acme/x\x1b[31mred:pull"' in line for line in lines), (
        caplog.text
    )
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert "\x1b" not in caplog.text
