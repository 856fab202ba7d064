"""Renders a job environment as ``export NAME='value'`` lines for an agent ``environment`` hook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer


def shell_quote(value: str) -> str:
    """Single-quote ``value`` for POSIX shells: nothing inside is expanded or executed."""
    return "'" + value.replace("'", "'\\''") + "'"


class ShellExportRenderer(BaseRenderer):
    media_type = "text/x-shellscript"
    format = "shell"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        lines = [
            f"# Job environment for queue {data['queue']['key']} of cluster {data['cluster_id']}"
        ]
        lines += [f"export {name}={shell_quote(value)}" for name, value in data["env"].items()]
        return ("\n".join(lines) + "\n").encode(self.charset)
