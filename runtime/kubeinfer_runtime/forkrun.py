"""`python -m kubeinfer_runtime.forkrun`: torchrun whose ranks are forked from the launcher on CPU nodes.

Same arguments, rendezvous, agent and failure handling as `python -m torch.distributed.run` (its own
parser, `config_from_args` and `elastic_launch`); only the start of a rank differs. torchrun starts each
rank as a new interpreter that imports torch again (about 1.5 CPU-seconds a rank, before any work); here
the launcher has imported torch once and, where it sees no GPU, each rank is a `fork` of it that runs the
module or script as `__main__`. Where it forks more than one rank it first imports the modules named in
KUBEINFER_PRELOAD (the worker names the task's libraries, diffusers or transformers: 1.4-1.7 CPU-seconds a
rank), so the ranks share one import of them too. Before forking it freezes the garbage collector's view
of its objects (`gc.freeze`, as CPython's documentation advises for fork without exec): a rank's collections
would otherwise walk every inherited object and so copy the pages they lie on.

Where a GPU is visible the ranks are exec'd exactly as torchrun does: torch's LaunchConfig has already
asked CUDA for the device count in the launcher, and a forked child of a process that has initialised
CUDA cannot use it.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import runpy
import signal
import sys
import uuid

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.launcher.api import elastic_launch
from torch.distributed.run import config_from_args, get_args_parser, parse_min_max_nnodes

from kubeinfer_runtime.launch import PRELOAD_ENV

log = logging.getLogger(__name__)

#: The ranks' process name (`ps -o comm`, /proc/<pid>/comm) before their global rank; a fork has its
#: launcher's command line and environment (torch's `pt_elastic`), so the name is what tells them apart.
RANK_NAME_PREFIX = "rank-"


def run_as_main(target: str, is_module: bool, argv: list[str]) -> None:
    """The forked rank: undo what it inherited from the launcher, then run `target` as a fresh rank would."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):  # the agent's handlers raise in the launcher
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.root.handlers.clear()  # the rank configures its own logging
    torch.multiprocessing._set_thread_name(RANK_NAME_PREFIX + os.environ.get("RANK", ""))
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # torch read the variable when the launcher imported it
        torch.set_num_threads(int(threads))
    try:
        if is_module:
            sys.argv = [target, *argv]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *argv]
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as done:  # the agent counts a rank as done when the function returns
        if done.code not in (None, 0):
            raise
    # A finished rank now waits in torch's wrapper until every rank is done, where an exec'd one would be
    # gone: when another rank fails, the agent's SIGTERM must end it, not a handler the target installed.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def preload(modules: str) -> None:
    """Import the comma-separated `modules` for the ranks to inherit; one that fails is left to the rank, which
    imports it again and reports the error where the job's logs show it."""
    for name in filter(None, (part.strip() for part in modules.split(","))):
        try:
            importlib.import_module(name)
        except Exception as err:  # any import error: the rank raises it again
            log.warning("could not preload %s for the ranks: %s", name, err)


@record  # type: ignore[untyped-decorator]  # torchrun's main has it: the first failure, summarised
def main(args: list[str] | None = None) -> None:
    options = get_args_parser().parse_args(args)
    if options.no_python or options.run_path:
        raise SystemExit("kubeinfer_runtime.forkrun runs Python modules and scripts only "
                         "(--no-python and --run-path are torchrun's)")
    torch.multiprocessing._set_thread_name("pt_elastic")
    # As torch.distributed.run.run: a single node without an endpoint rendezvouses on a free local port.
    if options.standalone or (options.rdzv_backend == "static" and not options.rdzv_endpoint
                              and options.master_port is None and parse_min_max_nnodes(options.nnodes)[1] == 1):
        options.rdzv_backend, options.rdzv_endpoint, options.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    if options.master_port is None:
        options.master_port = 29500
    config, command, command_args = config_from_args(options)
    if torch.cuda.is_available():
        elastic_launch(config=config, entrypoint=command)(*command_args)
        return
    config.start_method = "fork"
    if config.nproc_per_node > 1:  # a single rank would pay for a bigger copy-on-write heap and share nothing
        preload(os.environ.get(PRELOAD_ENV, ""))
    gc.freeze()  # the ranks' collections then skip what they inherit instead of touching (copying) its pages
    elastic_launch(config=config, entrypoint=run_as_main)(
        options.training_script, bool(options.module), list(options.training_script_args))


if __name__ == "__main__":
    main()
