"""Running the agent hooks as buildkite-agent does: sourced by bash, in an environment of the
test's making."""

from __future__ import annotations

import subprocess
from pathlib import Path

HOOKS = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "hooks"
#: Prints the shell's environment as one JSON object.
DUMP = '/usr/bin/python3 -c "import json, os; print(json.dumps(dict(os.environ)))"'
PATH = "/usr/local/bin:/usr/bin:/bin"


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``script`` in bash with only ``PATH`` and ``env`` (which may replace ``PATH``)."""
    return subprocess.run(
        ["/bin/bash", "-c", script],
        env={"PATH": PATH, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
