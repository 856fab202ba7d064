"""Pinned query counts of the read endpoints, in one baseline file per app (NetBox's model).

``tests/clusters/query_counts.json`` and ``tests/registries/query_counts.json`` map a URL name
(``namespace:name``, as ``reverse`` takes it) and an HTTP method to the number of SQL queries
one request takes::

    {"api:queues": {"GET": 4}}

A test pins a request with :func:`expected_queries`; the block must make exactly one request,
to that URL name with that method, and take exactly the baseline's count, or the test fails
with the SQL it captured. ``tests/api/test_query_counts.py`` checks that every list and detail
endpoint of the REST API has an entry, so that a new one cannot go unpinned.

A change that adds or removes a query changes the baseline in the same commit, on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from django.core.signals import request_started
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import Resolver404, resolve

TESTS = Path(__file__).resolve().parents[1]
#: The baseline files, one per app.
BASELINES = (TESTS / "clusters" / "query_counts.json", TESTS / "registries" / "query_counts.json")


@cache
def baselines() -> dict[tuple[str, str], tuple[int, Path]]:
    """``(URL name, method) -> (count, file)`` from every baseline file; a key in two files is an
    error."""
    counts: dict[tuple[str, str], tuple[int, Path]] = {}
    for path in BASELINES:
        for name, methods in json.loads(path.read_text()).items():
            for method, count in methods.items():
                key = (name, method)
                if key in counts:
                    raise ValueError(f"{method} {name} is pinned in {counts[key][1]} and {path}")
                counts[key] = (count, path)
    return counts


def _view_name(environ: dict[str, Any]) -> str:
    try:
        return resolve(environ["PATH_INFO"]).view_name
    except Resolver404:
        return f"<no URL name: {environ['PATH_INFO']}>"


@contextmanager
def expected_queries(name: str, method: str = "GET") -> Iterator[CaptureQueriesContext]:
    """Fail unless the block makes one ``method`` request to URL name ``name`` and it takes the
    baseline's number of queries. Yields the captured queries (``len(captured)`` is the count).
    """
    key = (name, method)
    if key not in baselines():
        pytest.fail(f"{method} {name} has no count in {' or '.join(map(str, BASELINES))}")
    expected, path = baselines()[key]
    requests: list[tuple[str, str]] = []

    def record(sender: object, environ: dict[str, Any], **kwargs: object) -> None:
        requests.append((_view_name(environ), environ["REQUEST_METHOD"]))

    request_started.connect(record)
    try:
        with CaptureQueriesContext(connection) as captured:
            yield captured
    finally:
        request_started.disconnect(record)
    if requests != [key]:
        pytest.fail(f"expected one {method} request to {name}; the block made {requests}")
    if len(captured) != expected:
        queries = "\n".join(
            f"{number}. {query['sql']}" for number, query in enumerate(captured, start=1)
        )
        pytest.fail(
            f"{method} {name} took {len(captured)} queries; {path.relative_to(TESTS.parent)} "
            f"pins {expected}. Fix the extra queries, or change the baseline on purpose.\n"
            f"{queries}",
            pytrace=False,
        )
