"""What became of each registry a fault run asked for, counted from the database's rows.

Shared by the fault-injection scenarios (tests/faults/scenarios.py, one stack) and the fault run
across replicas (tests/scale, ``make scale``): a pure function of the rows, so that the counting
itself is tested without any process (tests/scale/test_scale_pieces.py).

- **recovered**: the cluster has one registry, ``ready``, its URL published as the cluster's
  ``BUILDKITE_HOSTED_REGISTRY_URL``, reached through one unbroken sequence of events (each event
  starts where the previous one ended) with one ``ready``;
- **lost**: no registry, or one that is not ready or whose URL is not published;
- **duplicated**: each extra registry of a cluster, and each registry whose events reached
  ``ready`` more than once or interleave (two provisionings).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RegistryCounts:
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    #: ``ready`` events of the clusters' registries: one per cluster when nothing was doubled.
    provisionings: int = 0
    problems: list[str] = field(default_factory=list)


def count_registries(
    cluster_ids: Sequence[str],
    registries: Iterable[Sequence[Any]],
    events: Iterable[Sequence[Any]],
) -> RegistryCounts:
    """Count ``cluster_ids``'s registries.

    ``registries``: ``(cluster id, registry id or None, state, url, published url)`` rows, one
    per registry (a cluster without one: a row of Nones after the cluster id, as a left join
    gives). ``events``: ``(registry id, from state, to state)`` in the order they happened.
    """
    found: dict[str, list[tuple[Any, ...]]] = {}
    for cluster_id, *registry in registries:
        if registry[0] is not None:
            found.setdefault(str(cluster_id), []).append(tuple(registry))
    sequences: dict[str, list[tuple[str, str]]] = {}
    for registry_id, from_state, to_state in events:
        sequences.setdefault(str(registry_id), []).append((from_state, to_state))
    counts = RegistryCounts()
    for cluster_id in cluster_ids:
        mine = found.get(cluster_id, [])
        counts.duplicated += max(len(mine) - 1, 0)
        if not mine:
            counts.lost += 1
            continue
        for registry_id, *_ in mine:
            sequence = sequences.get(str(registry_id), [])
            counts.provisionings += sum(1 for _, to_state in sequence if to_state == "ready")
        registry_id, state, url, published = mine[0]
        sequence = sequences.get(str(registry_id), [])
        readies = sum(1 for _, to_state in sequence if to_state == "ready")
        chained = all(a[1] == b[0] for a, b in zip(sequence, sequence[1:], strict=False))
        if readies > 1 or not chained:
            counts.duplicated += 1
            counts.problems.append(f"registry {registry_id} events: {sequence}")
        if state == "ready" and published == url:
            counts.recovered += 1
        else:
            counts.lost += 1
            counts.problems.append(f"registry {registry_id}: {state}, published {published!r}")
    return counts


#: The rows :func:`count_registries` takes, for clusters whose ids are the parameter (a list).
REGISTRIES_QUERY = """
    select c.id::text, r.id::text, r.state, r.url, v.value
    from clusters_cluster c
    left join registries_registry r on r.cluster_id = c.id
    left join clusters_agentenvironmentvariable v
      on v.cluster_id = c.id and v.name = 'BUILDKITE_HOSTED_REGISTRY_URL'
    where c.id::text = any(%s)
"""
EVENTS_QUERY = (
    "select registry_id::text, from_state, to_state from registries_registryevent "
    "order by created_at, id"
)
