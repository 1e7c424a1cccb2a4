"""Find the rank processes a launcher forked, and nothing that only looks like one."""

from __future__ import annotations

import psutil

#: kubeinfer_runtime.forkrun.RANK_NAME_PREFIX (not imported: that module loads torch)
RANK_NAME_PREFIX = "rank-"


def name_of(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def rank_processes(root_pid: int) -> list[psutil.Process]:
    """The ranks under `root_pid`: the processes the launchers forked, which name themselves `rank-<RANK>`.

    A rank is a fork of its launcher, so their command lines are the same; a process that a rank or the
    launcher forks (ctypes runs `ldconfig -p`) has its parent's name until it execs, so only a rank
    whose parent is not a rank counts."""
    try:
        tree = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    ranks = {p.pid for p in tree if name_of(p).startswith(RANK_NAME_PREFIX)}
    return [p for p in tree if p.pid in ranks and _parent(p) not in ranks]


def global_rank(process: psutil.Process) -> int | None:
    """The rank's RANK, from its name (its /proc environ is the launcher's: the rank set RANK after fork)."""
    suffix = name_of(process).removeprefix(RANK_NAME_PREFIX)
    return int(suffix) if suffix.isdigit() else None


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None
