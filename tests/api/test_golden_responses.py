"""Every read response of the REST API, byte for byte, against a golden file.

The lists and details are built without DRF's per-field machinery (issue 15, P5); this pins what
they answered before that work, for a fixture with every case a response distinguishes
(``tests/api/golden_world.py``: default queue or none, blank text, every kind of queue, tokens
with and without expiry and allow-list, a revoked one, registries ready, failed and absent), and
pagination links and https.

Ids and times are fixed, so the golden file holds the exact bytes. After a change to what a
response shows on purpose, regenerate it with ``UPDATE_GOLDEN=1 pytest tests/api/<this file>``
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.api.golden_world import ORG, build_world
from tests.api.golden_world import fixed_id as _id

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> Client:
    return build_world()


GOLDEN = Path(__file__).with_name("golden_responses.json")
BASE = f"/v2/organizations/{ORG}"
FULL, BARE, FAILED = (f"{BASE}/clusters/{_id(n)}" for n in (10, 60, 70))
#: (name, path, query, secure): every read of the REST API, over the fixture.
REQUESTS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("access token", "/v2/access-token", {}, False),
    ("organization", BASE, {}, False),
    ("clusters", f"{BASE}/clusters", {}, False),
    ("clusters, https", f"{BASE}/clusters", {}, True),
    ("clusters, 100 a page", f"{BASE}/clusters", {"per_page": 100}, False),
    ("clusters, page 1 of 2", f"{BASE}/clusters", {"per_page": 2}, False),
    ("clusters, page 2 of 2", f"{BASE}/clusters", {"per_page": 2, "page": 2}, False),
    ("clusters, page 2 of 3", f"{BASE}/clusters", {"per_page": 1, "page": 2}, False),
    ("clusters, past the end", f"{BASE}/clusters", {"per_page": 2, "page": 9}, False),
    *((f"cluster {n}", path, {}, False) for n, path in ((10, FULL), (60, BARE), (70, FAILED))),
    ("queues", f"{FULL}/queues", {}, False),
    ("queues, https", f"{FULL}/queues", {"per_page": 100}, True),
    ("queues, page 2 of 2", f"{FULL}/queues", {"per_page": 3, "page": 2}, False),
    ("queues of a bare cluster", f"{BARE}/queues", {}, False),
    ("queues of a failed cluster", f"{FAILED}/queues", {}, False),
    *((f"queue {n}", f"{FULL}/queues/{_id(n)}", {}, False) for n in (11, 12, 13, 14)),
    ("queue 71", f"{FAILED}/queues/{_id(71)}", {}, False),
    *(
        (f"queue {n} environment", f"{cluster}/queues/{_id(n)}/environment", {}, False)
        for n, cluster in ((11, FULL), (13, FULL), (71, FAILED))
    ),
    ("tokens", f"{FULL}/tokens", {}, False),
    ("tokens, page 2 of 2", f"{FULL}/tokens", {"per_page": 1, "page": 2}, False),
    ("tokens of a bare cluster", f"{BARE}/tokens", {}, False),
    *((f"token {n}", f"{FULL}/tokens/{_id(n)}", {}, False) for n in (50, 51)),
    ("revoked token", f"{FULL}/tokens/{_id(52)}", {}, False),
    ("registry, ready", f"{FULL}/registry", {}, False),
    ("registry, failed", f"{FAILED}/registry", {}, False),
    ("registry, none", f"{BARE}/registry", {}, False),
]


def _answer(client: Client, path: str, query: dict[str, Any], secure: bool) -> dict[str, Any]:
    response = client.get(path, query, secure=secure)
    return {
        "status": response.status_code,
        "content_type": response["Content-Type"],
        "link": response.get("Link"),
        "body": response.content.decode(),
    }


def test_every_read_answers_what_it_answered_before_byte_for_byte(world: Client) -> None:
    answers = {name: _answer(world, *request) for name, *request in REQUESTS}

    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert list(answers) == list(golden)
    for name, answer in answers.items():
        assert answer == golden[name], name


def test_the_golden_file_covers_what_it_says(world: Client) -> None:
    """The fixture has what the module's docstring promises (a guard against a fixture that
    silently lost a case)."""
    golden = json.loads(GOLDEN.read_text())
    clusters = json.loads(golden["clusters, 100 a page"]["body"])
    queues = json.loads(golden["queues, https"]["body"])
    tokens = json.loads(golden["tokens"]["body"])

    assert [c["name"] for c in clusters] == ["Bare", "Open Source", "Zeta"]
    assert [c["default_queue_url"] is None for c in clusters] == [True, False, False]
    assert [c["created_by"] is None for c in clusters] == [True, False, False]
    assert {("hosted_agents" in q, q["dispatch_paused"]) for q in queues} == {
        (True, False), (True, True), (False, True)
    }  # fmt: skip
    assert all(q["url"].startswith("https://") for q in queues)
    assert [t["description"] for t in tokens] == ["default", "ci"]  # newest first, not revoked
    assert golden["registry, none"]["status"] == 404
    assert 'rel="next"' in golden["clusters, page 2 of 3"]["link"]
    assert 'rel="prev"' in golden["clusters, page 2 of 3"]["link"]
