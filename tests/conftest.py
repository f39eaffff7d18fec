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


# Test files that take minutes although they hold few tests (real Slurm jobs, killed and resumed
# sweeps, signals): xdist hands out files by test count, most first, so alone these would start
# last and leave one worker running them while the other idles. They join the largest file's
# unit instead (test_masks.py: hundreds of fast tests), which starts first; each file still runs
# whole on one worker, so module fixtures (the local Slurm cluster) stay in one process.
_LONG_FEW = ("test_scaleout_dist.py", "test_scaleout.py", "test_interrupt.py")
_FIRST_UNIT = "tests/test_masks.py"


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) has no such hook
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class LongFilesFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return _FIRST_UNIT if scope.rsplit("/", 1)[-1] in _LONG_FEW else scope

    return LongFilesFirst(config, log)
