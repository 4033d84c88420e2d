"""The 8-device tests: their own pytest process with 8 simulated CPU devices.

``tests/test_multidevice.py`` starts it from the suite (the rest of the suite keeps one
device); to run these alone::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest tests/multidevice
"""

from __future__ import annotations

import jax
import pytest


@pytest.fixture(autouse=True, scope="session")
def _eight_devices() -> None:
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
