"""Every configuration's first steps reproduce, bit for bit, the digests recorded in ``tests/data``.

The digests were recorded before the core's redesign (issue 21) and must survive any change
that is not meant to change the numerics. Re-record with ``python -m tests.trajectories`` only
for a deliberate change of numerics, and say why in the commit.
"""

from __future__ import annotations

import json

import jax
import pytest

from tests import trajectories
from tests.helpers import unavailable

RECORDED = json.loads(trajectories.PATH.read_text())


def test_every_case_was_recorded():
    assert sorted(RECORDED["digests"]) == sorted(trajectories.cases())


@pytest.mark.parametrize("name", sorted(trajectories.cases()))
def test_the_trajectory_is_the_recorded_one(name):
    if jax.__version__ != RECORDED["jax"]:
        unavailable(f"digests recorded with jax {RECORDED['jax']}, running {jax.__version__}: re-record them")
    assert trajectories.digest(trajectories.cases()[name]) == RECORDED["digests"][name]
