"""Find the rank processes torchrun started, and nothing that only looks like one."""

from __future__ import annotations

import psutil


def argv_of(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def parent_pid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None


def rank_processes(root_pid: int) -> list[psutil.Process]:
    """The ranks under `root_pid`: torchrun's children that run the rank module.

    A process forked by torchrun or by a rank (ctypes runs `ldconfig -p`) carries its parent's command line and
    environment until it execs, so only the parent tells a rank from such a child."""
    try:
        tree = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    argvs = {p.pid: argv_of(p) for p in tree}
    launchers = {pid for pid, argv in argvs.items() if "torch.distributed.run" in argv}
    return [p for p in tree if p.pid not in launchers and parent_pid(p) in launchers
            and "kubeinfer_runtime.rank" in argvs[p.pid]]
