"""Every configuration's first steps reproduce, bit for bit, the digests recorded in ``tests/data``.

The digests were recorded before the core's redesign (issue 21) and must survive any change
that is not meant to change the numerics. Re-record with ``python -m tests.trajectories`` only
for a deliberate change of numerics, and say why in the commit. They are kept per platform
(``tests/trajectories.py``: XLA:CPU's ``rsqrt`` is not the same on every CPU); a platform with
none of its own is compared with the digests recorded before platforms were fingerprinted.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from tests import trajectories
from tests.helpers import unavailable

RECORDED = json.loads(trajectories.PATH.read_text())


@pytest.fixture(scope="module")
def recorded_digests() -> dict[str, str]:
    if jax.__version__ != RECORDED["jax"]:
        unavailable(f"digests recorded with jax {RECORDED['jax']}, running {jax.__version__}: re-record them")
    digests = trajectories.digests_for(RECORDED, trajectories.platform())
    if digests is None:
        unavailable(f"no digests recorded for this platform ({trajectories.platform()}): see tests/trajectories.py")
    return digests


def test_every_case_was_recorded_for_every_platform():
    for fingerprint, platform in RECORDED["platforms"].items():
        assert sorted(platform["digests"]) == sorted(trajectories.cases()), fingerprint


def test_the_platform_fingerprint_is_stable_and_sees_rsqrt(monkeypatch):
    fingerprint = trajectories.platform()
    assert fingerprint == trajectories.platform() and len(fingerprint) == 12
    # A CPU whose rsqrt rounds one entry of a few otherwise is another platform (the probe hashes rsqrt's bits;
    # XLA rewrites 1 / sqrt(v) as rsqrt, so the other rounding is written out).
    rsqrt = jax.lax.rsqrt
    monkeypatch.setattr(jax.lax, "rsqrt", lambda v: jnp.where(v > 9.99, jnp.nextafter(rsqrt(v), 0.0), rsqrt(v)))
    assert trajectories.platform() != fingerprint


def test_a_platform_without_digests_of_its_own_is_compared_with_the_unfingerprinted_ones():
    record = {"platforms": {"abc": {"digests": {"x": "1"}}, trajectories.UNKNOWN_PLATFORM: {"digests": {"x": "2"}}}}
    assert trajectories.digests_for(record, "abc") == {"x": "1"}
    assert trajectories.digests_for(record, "def") == {"x": "2"}
    assert trajectories.digests_for({"platforms": {"abc": {"digests": {}}}}, "def") is None


@pytest.mark.parametrize("name", sorted(trajectories.cases()))
def test_the_trajectory_is_the_recorded_one(name, recorded_digests):
    assert trajectories.digest(trajectories.cases()[name]) == recorded_digests[name], (
        f"platform {trajectories.platform()}"
    )
