"""JSON log lines (``LOG_FORMAT=json``, the production default): one JSON object per record,
with the request or task id it was logged under, the traceback inside it, and no secret."""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from io import StringIO

import pytest
from django.conf import settings
from django.test import Client

from controlplane.logging import (
    ContextFilter,
    JsonLinesFormatter,
    KeyValueFormatter,
    RedactSecretsFilter,
    log_context,
    log_format,
)
from controlplane.request_id import request_id_from
from tests.registries.test_end_to_end import cluster_with_hosted_queue
from tests.support.processes import closed_url, wait_until

GENERATED = re.compile(r"[0-9a-f]{32}")


def _pipeline(formatter: logging.Formatter) -> tuple[logging.Logger, StringIO]:
    """A logger whose records go through the console handler's filters and ``formatter``."""
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger(f"tests.json.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def _records(stream: StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_its_extra_fields_as_keys() -> None:
    logger, stream = _pipeline(JsonLinesFormatter())
    logger.info("registry.provision.ready", extra={"registry_id": "r1", "attempt": 2})
    logger.warning("Not Found: /v2/x\n2026-01-01 ERROR forged\x1b[31m\u2028", extra={"n": None})

    first, second = _records(stream)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(first["time"]))
    assert first["level"] == "INFO"
    assert first["message"] == "registry.provision.ready"
    assert (first["registry_id"], first["attempt"]) == ("r1", 2)
    assert "request_id" not in first
    assert "task_id" not in first
    assert second["message"] == "Not Found: /v2/x\n2026-01-01 ERROR forged\x1b[31m\u2028"
    assert second["n"] is None
    assert "\x1b" not in stream.getvalue()
    assert "\u2028" not in stream.getvalue()


def test_a_traceback_is_a_string_field_of_its_one_record() -> None:
    logger, stream = _pipeline(JsonLinesFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("registry.attempt.error", extra={"registry_id": "r1"})

    [record] = _records(stream)
    assert record["level"] == "ERROR"
    assert record["registry_id"] == "r1"
    exc_info = str(record["exc_info"])
    assert exc_info.startswith("Traceback (most recent call last):\n")
    assert exc_info.endswith("ValueError: boom")


def test_records_carry_the_ids_of_the_context_they_were_logged_in() -> None:
    logger, stream = _pipeline(JsonLinesFormatter())
    with log_context(task_id="t-1", task_name="registries.provision"):
        logger.info("inside")
        logger.info("explicit", extra={"task_id": "mine"})
    logger.info("outside")

    inside, explicit, outside = _records(stream)
    assert (inside["task_id"], inside["task_name"]) == ("t-1", "registries.provision")
    assert explicit["task_id"] == "mine"
    assert "task_id" not in outside


AGENT_TOKEN = "bkct_" + "A1b2-C3d4_" * 4
API_TOKEN = "bkua_" + "Z9y8x7" * 6
CREDENTIAL = "bkrc_" + "q-W_e" * 8


@pytest.mark.parametrize("formatter", [JsonLinesFormatter(), KeyValueFormatter()])
def test_secrets_never_reach_the_log(formatter: logging.Formatter) -> None:
    logger, stream = _pipeline(formatter)
    logger.info(
        "token.used %s",
        AGENT_TOKEN,
        extra={
            "password": "hunter2",
            "Authorization": f"Bearer {API_TOKEN}",
            "client_secret": "s3cr3t",
            "refresh_token": "opaque-refresh",
            "token_id": "tok-42",
            "secret_id": "sec-7",
            "url": "redis://:p%40ss@redis.internal:6379/0",
            "data": {"args": f"('{CREDENTIAL}',)", "api_key": "k"},
        },
    )
    try:
        raise PermissionError(f"refused {CREDENTIAL}")
    except PermissionError:
        logger.exception("failed")

    text = stream.getvalue()
    for secret in (AGENT_TOKEN, API_TOKEN, CREDENTIAL, "hunter2", "s3cr3t", "opaque-refresh"):
        assert secret not in text
    assert "p%40ss" not in text
    assert "'k'" not in text
    assert '"k"' not in text
    # What was redacted stays recognisable; ids stay as they are.
    assert "bkct_[redacted]" in text
    assert "bkrc_[redacted]" in text
    assert "tok-42" in text
    assert "sec-7" in text
    assert "redis://:[redacted]@redis.internal:6379/0" in text
    if isinstance(formatter, JsonLinesFormatter):
        first, second = _records(stream)
        assert first["message"] == "token.used bkct_[redacted]"
        assert first["password"] == first["Authorization"] == "[redacted]"
        assert first["data"] == {"args": "('bkrc_[redacted]',)", "api_key": "[redacted]"}
        assert str(second["exc_info"]).endswith("PermissionError: refused bkrc_[redacted]")


def test_the_console_handler_formats_as_log_format_says_through_both_filters() -> None:
    console = settings.LOGGING["handlers"]["console"]
    assert console["formatter"] == settings.LOG_FORMAT
    if not os.environ.get("LOG_FORMAT"):  # the tests run as development does: DEBUG on, text
        assert settings.LOG_FORMAT == "text"
    assert console["filters"] == ["context", "redact"]
    assert log_format(" JSON ") == "json"
    with pytest.raises(ValueError, match="json, text"):
        log_format("xml")


def test_a_sane_request_id_is_kept_and_anything_else_replaced() -> None:
    for sane in ("abc", "0f9e-4c1a.b:c_d", "x" * 128):
        assert request_id_from(sane) == sane
    for insane in (None, "", "x" * 129, "a b", "a\nb", "-leading", "é", "a;b"):
        assert GENERATED.fullmatch(request_id_from(insane))


@pytest.mark.django_db
def test_every_answer_carries_a_request_id(client: Client) -> None:
    generated = client.get("/v2/nothing")
    assert generated.status_code == 404
    assert GENERATED.fullmatch(generated["X-Request-ID"])
    assert client.get("/v2/nothing", headers={"X-Request-ID": "req-1"})["X-Request-ID"] == "req-1"
    oversized = client.post(
        "/v2/organizations/acme/clusters",
        data=b"x" * (settings.API_MAX_BODY_BYTES + 1),
        content_type="application/json",
        headers={"X-Request-ID": "req-2"},
    )
    assert (oversized.status_code, oversized["X-Request-ID"]) == (413, "req-2")


def test_over_http_every_line_of_a_request_carries_its_id(
    live_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.setFormatter(JsonLinesFormatter())
    caplog.handler.addFilter(ContextFilter())

    def get(path: str, request_id: str) -> tuple[int, str]:
        url = live_server.url + path
        request = urllib.request.Request(url, headers={"X-Request-ID": request_id})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a test URL
                return response.status, response.headers["X-Request-ID"]
        except urllib.error.HTTPError as error:
            return error.code, error.headers["X-Request-ID"]

    with caplog.at_level(logging.INFO):
        not_found = get("/v2/nothing", "probe-404")
        # Answered by the view (DRF) and logged by Django after the middleware chain returned.
        unauthorized = get("/v2/organizations/acme/clusters", "probe-401")
        replaced = get("/v2/nothing-either", "no spaces allowed")

    assert not_found == (404, "probe-404")
    assert unauthorized == (401, "probe-401")
    assert replaced[0] == 404
    assert GENERATED.fullmatch(replaced[1])
    records = [json.loads(line) for line in caplog.text.splitlines() if line]
    by_path = {
        path: [r for r in records if r["message"] == f"{reason}: {path}"]
        for reason, path in [
            ("Not Found", "/v2/nothing"),
            ("Unauthorized", "/v2/organizations/acme/clusters"),
            ("Not Found", "/v2/nothing-either"),
        ]
    }
    assert [r["request_id"] for r in by_path["/v2/nothing"]] == ["probe-404"], caplog.text
    assert [r["request_id"] for r in by_path["/v2/organizations/acme/clusters"]] == ["probe-401"]
    assert [r["request_id"] for r in by_path["/v2/nothing-either"]] == [replaced[1]]


@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_each_record_of_a_task_with_its_id_and_name(start_worker) -> None:
    worker = start_worker(
        LOG_FORMAT="json",
        REGISTRY_URL=closed_url(),
        REGISTRY_PROVISION_MAX_ATTEMPTS="1",
    )
    cluster_with_hosted_queue("Logged", "linux")

    def provision_records() -> list[dict[str, object]]:
        lines = [line for line in worker.log().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        return [r for r in records if r["message"] == "registry.provision.started"]

    [started] = wait_until(provision_records, timeout=30, what="the worker to provision")
    assert GENERATED.fullmatch(str(started["task_id"]).replace("-", ""))
    assert started["task_name"] == "registries.provision"
