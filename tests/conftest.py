"""Shared fixtures (helpers live in ``helpers.py``) and the suite's settings."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import pytest
from helpers import hard_gradients, in_ci
from hypothesis import settings

# tests/multidevice needs 8 simulated devices in its own process (tests/test_multidevice.py starts it).
EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"
collect_ignore = [] if EIGHT_DEVICES in os.environ.get("XLA_FLAGS", "") else ["multidevice"]

# Hypothesis draws the same examples on every run in CI (derandomize); locally it explores.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if in_ci() else "dev"))


@pytest.fixture
def gradients() -> list:
    return hard_gradients(60, (4, 3))
