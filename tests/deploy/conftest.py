from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http import StandIn, stand_in_server


@pytest.fixture
def impostor() -> Iterator[StandIn]:
    """A stand-in control plane, for answers the real one never gives."""
    with stand_in_server() as server:
        yield server
