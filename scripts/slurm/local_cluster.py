#!/usr/bin/env python3
"""A single-node Slurm on localhost for tests and trying lcab's Slurm path on one machine.

    python scripts/slurm/local_cluster.py start /tmp/slurm   # prints the env to export
    python scripts/slurm/local_cluster.py stop /tmp/slurm

Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) and root. There is no
systemd on the CI machines, so the daemons are started directly: munged as user munge, then
`slurmctld -c` (clean state, job ids restart at 1), then `slurmd -N localhost`; ready when
sinfo shows the node idle. No cgroups, no accounting: the sacct stand-in next to this file
answers submitit from `scontrol`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
# A requeued job waits this long (+1 s) before it may start again: its old step credentials
# are revoked until they expire, and a job started earlier fails ("Job credential revoked").
# Slurm's default is 120 s; 10 s keeps a preemption test short. The scheduler looks every 2 s.
CRED_EXPIRE_S = 10


class SlurmUnavailable(RuntimeError):
    """Slurm cannot start here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )


def check() -> None:
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        raise SlurmUnavailable(f"missing {', '.join(missing)}: apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting munged and slurmd needs root")


def _munge_ok() -> bool:
    if not MUNGE_SOCKET.exists() or not _which("munge"):
        return False
    p = subprocess.run(f"{_which('munge')} -n | {_which('unmunge')}", shell=True, capture_output=True)
    return p.returncode == 0


def start_munge(state: Path) -> bool:
    """Starts munged unless one answers already; returns whether this call started it."""
    if _munge_ok():
        return False
    for d in ("/run/munge", "/var/lib/munge", "/var/log/munge", "/etc/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([_which("mungekey") or "mungekey", "--create"], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    cmd = ["runuser", "-u", "munge", "--", _which("munged"), "--force"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for _ in range(50):
        if _munge_ok():
            (state / "munged.started").write_text("1")
            return True
        time.sleep(0.1)
    raise SlurmUnavailable(f"munged did not start: {p.stderr.strip() or p.stdout.strip()}")


def _real_memory_mb() -> int:
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True).stdout
    m = re.search(r"RealMemory=(\d+)", out)
    total = int(m.group(1)) if m else 4096
    return max(512, total - max(1024, total // 10))  # a margin so the node is never "low memory"


def write_conf(state: Path) -> Path:
    for sub in ("state", "spool", "log"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    conf = state / "slurm.conf"
    conf.write_text(
        f"""ClusterName=lcabtest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire={CRED_EXPIRE_S}
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2
EnforcePartLimits=ALL
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost CPUs={cpus} RealMemory={_real_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def env(state: Path) -> dict[str, str]:
    """What a client (sbatch, sinfo, submitit) needs: this slurm.conf and the sacct stand-in."""
    return {"SLURM_CONF": str(state / "slurm.conf"), "PATH": f"{HERE}:{os.environ.get('PATH', '')}"}


def _log_tail(state: Path, n: int = 15) -> str:
    tails = []
    for name in ("slurmctld.log", "slurmd.log"):
        p = state / "log" / name
        if p.exists():
            tails.append(f"--- {name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]))
    return "\n".join(tails)


def start(state: Path, timeout_s: float = 30.0) -> dict[str, str]:
    """Starts a clean single-node cluster with state under `state`; returns the client env."""
    check()
    state = Path(state).resolve()
    stop(state)
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    start_munge(state)
    conf = write_conf(state)
    e = {**os.environ, **env(state)}
    for cmd in (
        [_which("slurmctld"), "-c", "-f", str(conf)],
        [_which("slurmd"), "-c", "-N", "localhost", "-f", str(conf)],
    ):
        p = subprocess.run(cmd, capture_output=True, text=True, env=e)
        if p.returncode != 0:
            raise SlurmUnavailable(f"{Path(cmd[0]).name} failed: {p.stderr.strip()}\n{_log_tail(state)}")
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        p = subprocess.run([_which("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=e)
        last = (p.stdout + p.stderr).strip()
        if p.returncode == 0 and last.startswith("idle"):
            return env(state)
        time.sleep(0.2)
    stop(state)
    raise SlurmUnavailable(f"node not idle after {timeout_s:.0f} s (sinfo: {last!r})\n{_log_tail(state)}")


def _kill_pidfile(path: Path, timeout_s: float = 10.0) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(state: Path) -> None:
    """Cancels jobs, stops slurmd and slurmctld, and munged if start() started it."""
    state = Path(state).resolve()
    if (state / "slurm.conf").exists() and (state / "slurmctld.pid").exists():
        e = {**os.environ, **env(state)}
        subprocess.run([_which("scancel") or "scancel", "--full", "-u", "root"], env=e, capture_output=True)
    _kill_pidfile(state / "slurmd.pid")
    _kill_pidfile(state / "slurmctld.pid")
    if (state / "munged.started").exists():
        _kill_pidfile(Path("/run/munge/munged.pid"))
        (state / "munged.started").unlink()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: local_cluster.py start|stop STATE_DIR")
    if sys.argv[1] == "stop":
        stop(Path(sys.argv[2]))
    else:
        try:
            for k, v in start(Path(sys.argv[2])).items():
                print(f"export {k}={v}")
        except SlurmUnavailable as exc:
            sys.exit(f"slurm: {exc}")
