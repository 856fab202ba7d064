"""Structured log lines: ``<time> <level> <logger> <event> key=value ...``.

Call sites log a dotted event name as the message and the facts as ``extra``:
``logger.info("registry.provision.ready", extra={"registry_id": registry.pk})``. Never pass a
secret in ``extra``; nothing here can tell a token from an id.

Values often come from requests (a path in Django's "Not Found: ..." message, a scope the
token endpoint was asked for), so control characters in the message and in every value are
escaped (``\n``, ``\x1b``, ``\u2028``): a request cannot end a line and forge the next one,
nor send escape sequences to an operator's terminal. A traceback keeps its lines.
"""

from __future__ import annotations

import logging
import re

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
        return line
