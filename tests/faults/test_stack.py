"""The fault-injection harness itself: a whole stack provisions a cluster's registry."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.processes import poll
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_a_stack_provisions_the_registry_of_a_hosted_queue(stack: Stack) -> None:
    print(f"\nstack started in {stack.timings['total']:.1f}s: {stack.timings}")
    print(f"postgres: {stack.postgres.timings}")

    cluster = stack.api("POST", "clusters", json={"name": "c1"})
    assert cluster.status_code == 201, cluster.text
    cluster_id = cluster.json()["id"]
    queue = stack.api(
        "POST",
        f"clusters/{cluster_id}/queues",
        json={"key": "linux", "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}},
    )
    assert queue.status_code == 201, queue.text

    started = time.monotonic()
    rows: list[tuple[Any, ...]] = []

    def ready() -> bool:
        rows[:] = stack.sql("select state, url from registries_registry")
        return bool(rows) and rows[0][0] == "ready"

    poll(ready, timeout=30, interval=0.2)
    print(f"registry ready {time.monotonic() - started:.1f}s after the queue was created")
    assert len(rows) == 1
    state, url = rows[0]
    assert state == "ready", stack.log_tails()
    assert url.startswith(f"127.0.0.1:{stack.registry_port}/")

    registry = stack.api("GET", f"clusters/{cluster_id}/registry")
    assert registry.status_code == 200, registry.text
    assert registry.json()["state"] == "ready"
    assert registry.json()["url"] == url
