"""A pool of N local worker processes in one process group (cluster=local cluster.nproc=N).

Workers start once (spawn context, TCP rendezvous on a free localhost port, gloo on CPU or
NCCL with one GPU per rank) and run task after task, so a sweep or a test suite pays the
start-up once. The parent is the watchdog: a worker that raises reports its error and exits,
a worker that dies is noticed by its exit code; either way the others are terminated and the
task fails within seconds with that rank's error. A collective timeout ends any other hang.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable

import torch.multiprocessing as mp

# Hard rule on the GPU machines: no NVLink multicast / NVLS.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


# CPU ranks share the host's cores through gloo; past a few per core a world only waits on
# itself. The floor keeps one 8-rank node's worth of ranks possible on any machine.
CPU_RANKS_PER_CORE = 4
CPU_RANKS_FLOOR = 8


def max_local_ranks(device_type: str) -> int:
    """The most worker processes cluster=local starts here: one per visible GPU on CUDA,
    4 per core (8 at least) on CPU."""
    if device_type == "cuda":
        import torch

        return torch.cuda.device_count()
    return max(CPU_RANKS_FLOOR, CPU_RANKS_PER_CORE * (os.cpu_count() or 1))


class WorkerError(RuntimeError):
    def __init__(self, rank: int, status: str, reason: str, tb: str = "") -> None:
        super().__init__(f"rank {rank}: {reason}")
        self.rank, self.status, self.reason, self.tb = rank, status, reason, tb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, backend, device_type, timeout_s, tasks, results) -> None:
    os.environ.update(SAFE_ENV)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch
    import torch.distributed as dist

    from lcab.results.outcome import classify

    try:
        kwargs = {}
        if device_type == "cpu":  # N ranks share the host's cores: no oversubscription
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if device_type == "cuda":
            torch.cuda.set_device(rank)
            kwargs["device_id"] = torch.device("cuda", rank)
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=dt.timedelta(seconds=timeout_s),
            **kwargs,
        )
        results.put(("ready", rank, None))
    except BaseException as exc:
        st, why = classify(exc)
        results.put(("error", rank, (st.value, why, traceback.format_exc())))
        os._exit(1)
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args = task
        try:
            val = fn(*args)
            results.put(("ok", rank, val if rank == 0 else None))
        except BaseException as exc:
            st, why = classify(exc)
            results.put(("error", rank, (st.value, why, traceback.format_exc())))
            time.sleep(0.2)  # let the queue's feeder thread flush
            os._exit(1)
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


class LocalPool:
    def __init__(self, nproc: int, backend: str, device_type: str, timeout_s: float = 120.0) -> None:
        if nproc < 1:  # zero workers would "answer" every task with nothing
            raise ValueError(f"a pool needs at least one worker, got nproc={nproc}")
        self.nproc, self.backend, self.device_type = nproc, backend, device_type
        ctx = mp.get_context("spawn")
        os.environ.update(SAFE_ENV)
        port = free_port()
        self.tasks = [ctx.Queue() for _ in range(nproc)]
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(r, nproc, port, backend, device_type, timeout_s, self.tasks[r], self.results),
                daemon=True,
            )
            for r in range(nproc)
        ]
        for p in self.procs:
            p.start()
        self.alive = True
        self._collect("ready", deadline=time.monotonic() + max(120.0, timeout_s))

    def _collect(self, kind: str, deadline: float):
        got, val = set(), None
        while len(got) < self.nproc:
            try:
                msg, rank, payload = self.results.get(timeout=0.2)
            except queue.Empty:
                for r, p in enumerate(self.procs):
                    if not p.is_alive() and r not in got:
                        # It may have posted its error just before exiting.
                        try:
                            msg, rank, payload = self.results.get(timeout=1.0)
                            if msg == "error":
                                self._fail(rank, *payload)
                        except queue.Empty:
                            pass
                        self._fail(r, "error", f"worker exited with code {p.exitcode}", "")
                if time.monotonic() > deadline:
                    self._fail(
                        -1,
                        "error",
                        f"no answer from ranks {sorted(set(range(self.nproc)) - got)} in time",
                        "",
                    )
                continue
            if msg == "error":
                self._fail(rank, *payload)
            if msg == kind:
                got.add(rank)
                if rank == 0:
                    val = payload
        return val

    def _fail(self, rank: int, status: str, reason: str, tb: str):
        self.close(force=True)
        raise WorkerError(rank, status, reason, tb)

    def run(self, fn: Callable, *args, timeout_s: float = 3600.0):
        """fn(*args) on every rank; rank 0's return value. fn must be importable (spawn)."""
        if not self.alive:
            raise RuntimeError("pool is closed")
        for q in self.tasks:
            q.put((fn, args))
        return self._collect("ok", deadline=time.monotonic() + timeout_s)

    def close(self, force: bool = False) -> None:
        if not self.alive:
            return
        self.alive = False
        if not force:
            for q in self.tasks:
                q.put(None)
            for p in self.procs:
                p.join(timeout=30)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


_POOLS: dict[tuple, LocalPool] = {}


def get_pool(nproc: int, backend: str, device_type: str, timeout_s: float = 120.0) -> LocalPool:
    """One pool per (nproc, backend, device), kept for the following cells of a sweep."""
    key = (nproc, backend, device_type, timeout_s)
    pool = _POOLS.get(key)
    if pool is None or not pool.alive:
        for k, other in list(_POOLS.items()):  # one pool at a time holds the GPUs
            other.close()
            del _POOLS[k]
        pool = _POOLS[key] = LocalPool(nproc, backend, device_type, timeout_s)
    return pool


@atexit.register
def close_all() -> None:
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()
