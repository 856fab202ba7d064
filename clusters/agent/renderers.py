"""Renders a job environment as ``export NAME=$'value'`` lines for an agent ``environment`` hook.

Each variable is exactly one line, in bash's ANSI-C quoting, so that the hook can check every
line against one pattern before it evaluates any (deploy/agent/hooks/environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer

_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shell_quote(value: str) -> str:
    """Quote ``value`` as bash ``$'...'``: nothing inside is expanded or executed, and control
    characters (newlines included) are escaped, so the result is one line."""
    quoted = []
    for char in value:
        if char in _ESCAPES:
            quoted.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            quoted.append(f"\\x{ord(char):02x}")
        else:
            quoted.append(char)
    return "$'" + "".join(quoted) + "'"


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
