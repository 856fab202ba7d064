"""Structured log lines, one per event: JSON (``LOG_FORMAT=json``, the production default) or
``<time> <level> <logger> <event> key=value ...`` text (development).

Call sites log a dotted event name as the message and the facts as ``extra``:
``logger.info("registry.provision.ready", extra={"registry_id": registry.pk})``. Never pass a
secret in ``extra``: :class:`RedactSecretsFilter` catches our own token formats and keys named
like secrets, but it cannot tell every secret from an id.

Every record also carries the id of the request (``request_id``) or Celery task (``task_id``,
``task_name``) it was logged under, from a context variable that :mod:`controlplane.request_id`
and the Celery signals in :mod:`controlplane.celery` set; :class:`ContextFilter` copies it onto
the record.

Values often come from requests (a path in Django's "Not Found: ..." message, a scope the
token endpoint was asked for), so control characters in the message and in every value are
escaped (``\n``, ``\x1b``, ``\u2028``): a request cannot end a line and forge the next one,
nor send escape sequences to an operator's terminal. A traceback keeps its lines.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
#: overrides and isolates (which reorder what a terminal shows).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a backslash escape."""
    return _CONTROL.sub(_escape_control, text)


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' ="\\') or _CONTROL.search(text):
        return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # The message only: a traceback appended after it keeps its lines.
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if extras:
            line += " " + " ".join(f"{key}={_quote(value)}" for key, value in extras.items())
        return redact_tokens(line)


class JsonLinesFormatter(JsonFormatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    then every ``extra`` field, the request or task ids, and ``exc_info`` (the traceback, as one
    string) when there is one. JSON escapes control characters by itself (``ensure_ascii``
    escapes every non-ASCII character too, so line separators and bidirectional overrides
    included), so nothing a request sends can end the line.

    A record without a traceback, stack or ``dict`` message (nearly all of them) is written
    without python-json-logger's generic field walk, with one encoder built once: the same
    line, for a third of the cost (the token endpoint logs one per token)."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=sorted(_STANDARD_ATTRS),
            json_ensure_ascii=True,
        )
        # What ``json.dumps(..., cls=JsonEncoder, ensure_ascii=True)`` builds for every record.
        encoder = JsonEncoder(ensure_ascii=True)
        self._encode = encoder.encode
        # What ``encoder.encode`` hands the C encoder, which it builds for every record (it
        # needs a fresh dict of the containers being encoded, for its circular check).
        self._c_encoder_args = (
            encoder.default,
            encode_basestring_ascii,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
        self._skip = frozenset(self._skip_fields)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _iso_time(record.created)
        super().add_fields(log_data, record, message_dict)

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return self._encode(log_data)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info or isinstance(record.msg, dict):
            # A traceback's exception message can quote a token; redact the whole line.
            return redact_tokens(super().format(record))
        # What ``add_fields`` makes of such a record, in the same order.
        record.message = message = record.getMessage()
        log_data: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        skip = self._skip
        log_data.update(
            {
                key: value
                for key, value in record.__dict__.items()
                if key not in skip and not key.startswith("_")
            }
        )
        if c_make_encoder is None:  # no C accelerator: the library's own path
            return redact_tokens(self._encode(log_data))
        return redact_tokens("".join(c_make_encoder({}, *self._c_encoder_args)(log_data, 0)))


#: The last whole second ``_iso_time`` wrote, and its text up to the seconds.
_second_text: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _iso_time(created: float) -> str:
    """``datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")``, with the
    date and time up to the second converted once a second: the full conversion cost as much
    as the rest of a line's fields. ``created`` is split into seconds and microseconds as
    ``fromtimestamp`` splits it (rounded half to even, carried into the seconds)."""
    global _second_text
    fraction, whole = math.modf(created)
    micro = round(fraction * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    known = _second_text
    if known[0] != second:
        text = datetime.fromtimestamp(second, tz=UTC).replace(tzinfo=None).isoformat()
        known = _second_text = (second, text)
    return f"{known[1]}.{micro // 1000:03d}+00:00"


LOG_FORMATS = ("json", "text")


def log_format(raw: str) -> str:
    """``LOG_FORMAT``: ``json`` or ``text`` (the names of the formatters in ``LOGGING``)."""
    value = raw.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}")
    return value


# --- Request and task ids ---------------------------------------------------------------------

_NO_IDS: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("controlplane_log_context", default=_NO_IDS)


def bind_context(**ids: str) -> Token[Mapping[str, str]]:
    """Log every record from now on in this context (thread, task) with ``ids``; undo with
    :func:`unbind_context` and the returned token."""
    return _context.set(ids)


def unbind_context(token: Token[Mapping[str, str]]) -> None:
    _context.reset(token)


def clear_context() -> None:
    _context.set(_NO_IDS)


@contextmanager
def log_context(**ids: str) -> Iterator[None]:
    token = bind_context(**ids)
    try:
        yield
    finally:
        unbind_context(token)


class ContextFilter(logging.Filter):
    """Puts the current request or task ids on each record (a value passed in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


# --- Secrets ----------------------------------------------------------------------------------

#: Agent tokens, API access tokens, job registry credentials (clusters/services/credentials.py,
#: registries/services/job_credentials.py): the prefix stays, so a reader knows what it was.
_TOKEN = re.compile(r"\b(bkct|bkua|bkrc)_[A-Za-z0-9_\-]+")
#: The password in a URL's userinfo (``redis://:password@host``, ``postgres://u:password@h``).
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]+@")
#: Field names whose value is a secret; ``token_id``, ``secret_id`` and the like are ids.
_SECRET_KEY = re.compile(r"secret|token|password|passwd|authorization|api_key|cookie", re.I)
_ID_KEY = re.compile(r"_ids?$", re.I)
REDACTED = "[redacted]"


def redact_tokens(text: str) -> str:
    """``text`` with our tokens and URL passwords replaced by ``[redacted]``. Text that cannot
    hold either (no ``bk``, no ``://``: nearly every value) is returned without a regex."""
    if "bk" in text:
        text = _TOKEN.sub(_redact_token, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(_redact_url_password, text)
    return text


def _redact_token(match: re.Match[str]) -> str:
    return f"{match.group(1)}_{REDACTED}"


def _redact_url_password(match: re.Match[str]) -> str:
    return f"{match.group(1)}:{REDACTED}@"


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (remembered per name: ``extra`` keys are
    the code's own names, a few dozen)."""
    return bool(_SECRET_KEY.search(key)) and not _ID_KEY.search(key)


def _redact_value(key: str, value: object) -> object:
    if is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_tokens(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


class RedactSecretsFilter(logging.Filter):
    """Replaces secrets in a record before any handler formats it: every ``extra`` field named
    like a secret (``password``, ``authorization``, ``*token*``/``*secret*`` but not ``*_id``), and
    our tokens (``bkct_``, ``bkua_``, ``bkrc_``) or URL passwords in the message and string
    fields. The formatters redact the tokens from the finished line too (tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for key in fields.keys() - _STANDARD_ATTRS:
            value = fields[key]
            # Most fields: a string with neither pattern's anchor, under a name that is no
            # secret's (``redact_tokens``'s shortcut, without the two calls).
            if (
                type(value) is str
                and "bk" not in value
                and "://" not in value
                and not is_secret_key(key)
            ):
                continue
            redacted = _redact_value(key, value)
            if redacted is not value and redacted != value:
                setattr(record, key, redacted)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging reports it when it formats
            return True
        redacted_message = redact_tokens(message)
        if redacted_message != message:
            record.msg, record.args = redacted_message, None
        return True
