import sys
from pathlib import Path

# Test helpers (e.g. wandb_records) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

import pytest
from slurm_fixture import slurm  # noqa: F401  (a real local Slurm for the scale-out tests)

from lcab.launch.pool import LocalPool


@pytest.fixture(scope="module")
def pools():
    """pools(world) -> a live gloo LocalPool of that world, reused by a module's CP cases."""
    made: dict[int, LocalPool] = {}

    def get(world: int) -> LocalPool:
        if world not in made or not made[world].alive:
            for p in made.values():  # one pool at a time on a 2-core machine
                p.close()
            made.clear()
            made[world] = LocalPool(world, "gloo", "cpu", timeout_s=120)
        return made[world]

    yield get
    for p in made.values():
        p.close()
