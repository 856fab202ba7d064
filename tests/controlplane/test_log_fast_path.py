"""The JSON formatter's common path writes the line python-json-logger's own field walk writes,
and the redaction's shortcuts (no regex without ``bk`` or ``://``) miss no secret."""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid

import pytest
from pythonjsonlogger.json import JsonFormatter

from controlplane.logging import (
    REDACTED,
    JsonLinesFormatter,
    RedactSecretsFilter,
    _iso_time,
    is_secret_key,
    redact_tokens,
)


def record(msg: object, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("tests.fast").makeRecord(
        "tests.fast", logging.INFO, __file__, 1, msg, args, None, extra=extra
    )


def library_line(formatter: JsonLinesFormatter, made: logging.LogRecord) -> str:
    """The line through python-json-logger's ``format`` (what the formatter did before)."""
    return redact_tokens(JsonFormatter.format(formatter, made))


EXTRAS: list[dict[str, object]] = [
    {},
    {"registry_id": "r1", "attempt": 2, "ok": True, "none": None, "ratio": 0.5},
    {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "id": uuid.UUID(int=7)},
    {"nested": {"a": [1, 2, {"b": "c"}]}, "text": "é \u2028 \x1b[31m\n"},
    {"time": "an extra named like a field", "level": "x", "logger": "y"},
    {"_private": "left out", "subject": "cluster:1:agent-token:2"},
    {"url": "redis://:hunter2@redis:6379/0", "value": "bkct_abcdef and bkrc_xyz"},
]


@pytest.mark.parametrize("extra", EXTRAS)
def test_a_plain_record_is_written_as_the_library_writes_it(extra: dict[str, object]) -> None:
    formatter = JsonLinesFormatter()
    made = record("registry.token.issued", **extra)
    made.request_id = "0" * 32

    assert formatter.format(made) == library_line(formatter, made)


def test_a_message_with_arguments_is_formatted_first() -> None:
    formatter = JsonLinesFormatter()
    made = record("Not Found: %s", "/v2/bkct_secret\n")

    line = formatter.format(made)

    assert line == library_line(formatter, made)
    assert "bkct_secret" not in line
    assert made.message == "Not Found: /v2/bkct_secret\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing here", "nothing here"),
        ("bkct_abc", f"bkct_{REDACTED}"),
        ("x bkua_a-b_c y", f"x bkua_{REDACTED} y"),
        ("(bkrc_1)", f"(bkrc_{REDACTED})"),
        ("bk but no token: bkxx_1", "bk but no token: bkxx_1"),
        ("postgres://u:pw@h/db", f"postgres://u:{REDACTED}@h/db"),
        ("https://example.com/path@x", "https://example.com/path@x"),
        ("both bkct_a redis://:p@r", f"both bkct_{REDACTED} redis://:{REDACTED}@r"),
    ],
)
def test_redact_tokens(text: str, expected: str) -> None:
    assert redact_tokens(text) == expected


def test_secret_keys_are_the_same_asked_twice() -> None:
    for _ in range(2):
        assert is_secret_key("password")
        assert is_secret_key("agent_token")
        assert not is_secret_key("token_id")
        assert not is_secret_key("subject")


def test_the_filter_redacts_extra_fields_and_leaves_the_standard_ones() -> None:
    made = record("m", password="p", token_id="t1", note="bkct_x", safe="s")

    assert RedactSecretsFilter().filter(made)

    assert (made.password, made.token_id, made.note, made.safe) == (  # type: ignore[attr-defined]
        REDACTED,
        "t1",
        f"bkct_{REDACTED}",
        "s",
    )
    assert made.msg == "m"
    assert made.levelname == "INFO"


@pytest.mark.parametrize(
    "created",
    [
        0.0,
        1.0,
        1_764_612_345.0,
        1_764_612_345.0004995,
        1_764_612_345.9995,
        1_764_612_345.9999996,  # rounds up into the next second
        1_764_612_346.0000004,
        1_764_612_345.123456,
        -1.5,
        -0.0000001,
        253_402_300_799.999,  # 9999-12-31T23:59:59.999
    ],
)
def test_the_time_is_written_as_datetime_writes_it(created: float) -> None:
    expected = dt.datetime.fromtimestamp(created, tz=dt.UTC).isoformat(timespec="milliseconds")

    assert _iso_time(created) == expected
    assert _iso_time(created) == expected  # the second's text remembered


def test_the_time_of_random_moments_is_written_as_datetime_writes_it() -> None:
    rng = random.Random(15)
    for _ in range(20_000):
        created = (
            rng.uniform(0, 4_102_444_800) if rng.random() < 0.5 else 1_764_612_345 + rng.random()
        )
        expected = dt.datetime.fromtimestamp(created, tz=dt.UTC).isoformat(timespec="milliseconds")
        assert _iso_time(created) == expected, created
