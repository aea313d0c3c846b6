"""Seeded hypothesis profile and shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from helpers import INSTANCES

# Every property test is seeded (derandomised): the same examples on every run.
settings.register_profile(
    "layerfit", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("layerfit")


@pytest.fixture(scope="session")
def instance_files() -> list[Path]:
    return sorted(INSTANCES.glob("*.json"))
