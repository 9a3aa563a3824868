"""Launching `torchrun` jobs from tests: free loopback ports, two "nodes" on one machine, killing a job.

Everything stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# One thread per process: the machines running the tests have few cores, and equal float reductions need it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def standalone(nproc: int, *module_args: str) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m MODULE ...` on this machine."""
    return [*TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), "-m", *module_args]


def two_nodes(port: int, *module_args: str) -> list[list[str]]:
    """The commands of a 2-node job with one process per node, as two machines would run them, on loopback: a
    c10d rendezvous at 127.0.0.1:PORT, and `--local-addr` so the processes' own group meets on loopback too."""
    return [[*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"mixkit-test-{port}",
             "--rdzv-conf", "join_timeout=60", "--local-addr", "127.0.0.1", "-m", *module_args]
            for rank in (0, 1)]


def run_together(commands: list[list[str]], timeout: float) -> list[tuple[int, str, str]]:
    """Start every command at once, wait for all (killing every one at the deadline): (status, stdout, stderr)."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for command in commands]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                kill_tree(process)
    return results


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
    except OSError:  # already gone
        return [pid]
    return [pid] + [descendant for child in children for descendant in process_tree(child)]


def kill_tree(process: subprocess.Popen) -> int:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in sessions of their own, so
    killing its process group would leave them running); its exit status (-9)."""
    for pid in process_tree(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return process.wait()


def kill_after(command: list[str], marker: Path, timeout: float = 180.0) -> int:
    """Start `command`, SIGKILL it (all its processes) as soon as `marker` exists; the exit status."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + timeout
    while not marker.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return kill_tree(process)
