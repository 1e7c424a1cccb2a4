"""`kubeinfer`: run a DistributedInference manifest on this machine, validate one, or try the demo.

    kubeinfer run JOB.yaml [--nproc N] [--output DIR|URI]   same manifest, N local processes, no cluster
    kubeinfer validate JOB.yaml                              field-level errors, exit 2
    kubeinfer demo                                           tiny Flux model, 6 prompts, 2 processes
    kubeinfer tiny-model flux|gpt2|llama DIR                 build a tiny random model offline
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from kubeinfer_api.jobconfig import JobConfig, make_job_config
from kubeinfer_api.plan import world_size
from kubeinfer_api.validation import SpecError, parse_manifest, parse_spec
from kubeinfer_runtime import tinymodels

#: Env a pod gets from the operator; a local run must not inherit it from the calling shell.
CLUSTER_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT",
               "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "RANK", "LOCAL_RANK",
               "KUBEINFER_JOB_FILE", "KUBEINFER_ATTEMPT")


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError([f"{path}: cannot read a YAML manifest ({err})"]) from None
    if not isinstance(manifest, dict):
        raise SpecError([f"{path}: expected a DistributedInference manifest (a YAML mapping)"])
    return manifest


def local_job(manifest: dict[str, Any], nproc: int | None, output: str | None) -> JobConfig:
    """The manifest as one local node with `nproc` processes (default: its world size), writing to `output`."""
    doc = copy.deepcopy(manifest)
    raw = doc.setdefault("spec", {}) if isinstance(doc.get("spec"), dict | None) else {}
    workers = raw.setdefault("workers", {})
    if nproc is not None:
        workers.update({"nodes": 1, "processesPerNode": nproc})
    try:
        name, spec = parse_manifest(doc)
        workers.update({"nodes": 1, "processesPerNode": world_size(spec)})
        raw.setdefault("output", {})["uri"] = output or str(Path("outputs", name).absolute()) + "/"
        return make_job_config(name, parse_spec(raw), uid="local")
    except SpecError as err:
        if nproc is None:
            raise
        hint = f" (this run: 1 node x {nproc} processes; change --nproc)"
        raise SpecError([p + hint if "world size" in p or "processes" in p else p for p in err.problems]) from None


def run_local(job: JobConfig) -> int:
    """torchrun --standalone with the job's process count; prints where the outputs are."""
    from kubeinfer_runtime.launch import first_error, make_run_dir, preload_env, run_ranks, torchrun_argv

    run_dir = make_run_dir()
    (run_dir / "job.json").write_text(job.to_json())
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    env.update({"KUBEINFER_JOB_FILE": str(run_dir / "job.json"), "KUBEINFER_ATTEMPT": "0"})
    env.setdefault("KUBEINFER_PROGRESS", "off")
    env = preload_env(job.spec.task.type) | env
    nproc = job.plan.processes_per_node
    if nproc > 1:  # torchrun's own default, without its banner; results do not depend on it
        env.setdefault("OMP_NUM_THREADS", "1")
    print(f"kubeinfer: running {job.name} with {nproc} local process(es) -> {job.spec.output.uri}", flush=True)
    code = run_ranks(torchrun_argv(nproc, standalone=True), env, run_dir)
    if code != 0:
        print(f"kubeinfer: {job.name} failed: {first_error(run_dir) or f'torchrun exited {code}'}", file=sys.stderr)
    return code


def summary(job: JobConfig) -> dict[str, Any]:
    from kubeinfer_runtime.ledger import Ledger
    from kubeinfer_runtime.storage import ObjectStore

    store = ObjectStore(job.spec.output.uri, endpoint_url=job.spec.output.endpoint_url)
    return Ledger(store).success() or {}


def cmd_run(args: argparse.Namespace) -> int:
    job = local_job(read_manifest(args.manifest), args.nproc, args.output)
    code = run_local(job)
    if code == 0:
        done = summary(job)
        print(f"kubeinfer: complete: {done.get('succeeded')} of {done.get('total')} items in {job.spec.output.uri}")
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    name, spec = parse_manifest(read_manifest(args.manifest))
    plan = make_job_config(name, spec).plan
    print(f"{args.manifest}: valid ({plan.strategy}: {plan.explanation}; world size {plan.world_size})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kubeinfer_runtime.demo import demo_manifest, print_outputs

    print("kubeinfer demo: building the tiny Flux model (cached after the first run)...", flush=True)
    manifest = demo_manifest(tinymodels.cached("flux"))
    job = local_job(manifest, args.nproc, args.output)
    code = run_local(job)
    if code == 0:
        print_outputs(job)
    return code


def cmd_tiny_model(args: argparse.Namespace) -> int:
    print(tinymodels.build(args.kind, args.dir, args.seed))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubeinfer", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a manifest locally with N processes (no cluster)")
    run.add_argument("manifest", type=Path)
    run.add_argument("--nproc", type=int, help="local processes (default: the manifest's world size)")
    run.add_argument("--output", help="output folder or URI (default: ./outputs/<job>/)")
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser("validate", help="check a manifest; field-level errors, exit 2")
    validate.add_argument("manifest", type=Path)
    validate.set_defaults(func=cmd_validate)
    demo = sub.add_parser("demo", help="tiny Flux model, 6 prompts, 2 processes, outputs in ./outputs/local-demo/")
    demo.add_argument("--nproc", type=int, default=2)
    demo.add_argument("--output", help="output folder or URI (default: ./outputs/local-demo/)")
    demo.set_defaults(func=cmd_demo)
    tiny = sub.add_parser("tiny-model", help="build a tiny random model offline (save_pretrained)")
    tiny.add_argument("kind", choices=sorted(tinymodels.BUILDERS))
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except SpecError as err:
        print("invalid manifest:\n  " + "\n  ".join(err.problems), file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
