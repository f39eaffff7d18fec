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


# Test files that take minutes (real Slurm, killed sweeps, README commands, the CP matrix) run
# first in a plain (one-process) run; under xdist this only orders files of equal test counts.
_LONG_FILES = (
    "test_scaleout_dist.py",
    "test_scaleout.py",
    "test_readme_commands.py",
    "test_cp_matrix.py",
    "test_cp_peers.py",
    "test_fuzz_cli.py",
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(_LONG_FILES)))
