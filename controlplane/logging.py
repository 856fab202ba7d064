"""Structured log lines: ``<time> <level> <logger> <event> key=value ...``.

Call sites log a dotted event name as the message and the facts as ``extra``:
``logger.info("registry.provision.ready", extra={"registry_id": registry.pk})``. Never pass a
secret in ``extra``; nothing here can tell a token from an id.
"""

from __future__ import annotations

import logging

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if extras:
            line += " " + " ".join(f"{key}={_quote(value)}" for key, value in extras.items())
        return line
