"""`pipeline`: the world is one pipeline over a transformers causal LM (torch.distributed.pipelining).

Why not `accelerate.inference.prepare_pippy` itself (accelerate 1.15): it picks the stage by
`local_process_index` and the first stage by `is_local_main_process`, so it breaks across nodes;
"auto" cuts `num_chunks` stages instead of one per process; `gather_output=True` crashes. This
module does what it does (accelerate's `generate_device_map` for automatic split points, torch's
`pipeline` + `ScheduleGPipe`) with the global rank. Before tracing, forwards decorated with
`@torch.no_grad()` (Llama's rotary embedding) are unwrapped: export turns the decorator into a
set-grad higher-order op that the split graph cannot run ("Expected positional argument for
parameter unsqueeze_default"); inference runs under no_grad anyway. (Tracing the whole model under
no_grad instead breaks GPT-2's capture.)

Generation is greedy, one full forward per new token through the pipeline, on a fixed-shape
buffer (traced shapes are static): prompts are right-padded, which a causal LM never looks at, so
tokens equal `model.generate(do_sample=False)`. The last stage picks each next token and broadcasts
it, because the first stage needs it for the next step; every rank therefore holds the outputs, and
one rank owns them: the last stage, or rank 0 with `gatherOutput`.

Each buffer length is traced from the loaded model, which stays where it was loaded: a traced stage
holds the loaded model's own Parameter objects, so `build_stage` moving it to the GPU would move them
in place and the next trace would mix devices. Each stage is therefore rebound, before it is built,
to this rank's one device copy of its weights (made on the first trace, shared by every later one),
and devices the CPU trace burned into ops' positional arguments are pointed at the rank's device.
Checked on a GPU by bench/gpu_pipeline_check.py.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from kubeinfer_runtime.strategies.base import Item, Result, Strategy, register
from kubeinfer_runtime.strategies.common import item_parameters
from kubeinfer_runtime.strategies.textgen import DEFAULT_MAX_NEW_TOKENS, load_lm

ALLOWED_PARAMETERS = ("max_new_tokens", "do_sample")
LENGTH_BUCKET = 16  # buffer lengths are rounded up to this, so few shapes are traced


def check_parameters(params: dict[str, Any]) -> int:
    """max_new_tokens of an item; anything else the greedy pipeline cannot honour is an error."""
    unknown = sorted(set(params) - set(ALLOWED_PARAMETERS))
    if unknown:
        raise ValueError(f"task.parameters: strategy pipeline supports only max_new_tokens (greedy); remove {unknown}")
    if params.get("do_sample"):
        raise ValueError("task.parameters.do_sample: strategy pipeline generates greedily; use strategy data "
                         "for sampling")
    return int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))


def auto_split_points(model: torch.nn.Module, stages: int) -> list[str]:
    """First module of each stage after the first, balanced by size without cutting a `_no_split_modules` block."""
    from accelerate.inference import generate_device_map

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    device_map = generate_device_map(model, stages, no_split_module_classes=no_split)
    points = []
    for stage in range(1, stages):
        first = next((name for name, where in device_map.items() if where == stage), None)
        if first is None:
            raise ValueError(f"strategy.pipeline.splitPoints: the model is too small to split automatically into "
                             f"{stages} stages; name the split points (e.g. model.layers.N)")
        points.append(first)
    return points


def check_split_points(model: torch.nn.Module, points: list[str], stages: int) -> list[str]:
    modules = dict(model.named_modules())
    unknown = [p for p in points if p not in modules]
    if unknown:
        blocks = [n for n, m in modules.items() if type(m).__name__ in (getattr(model, "_no_split_modules", None)
                                                                        or [])][:3]
        raise ValueError(f"strategy.pipeline.splitPoints: {unknown} are not modules of {type(model).__name__} "
                         f"(e.g. {blocks})")
    if len(points) != stages - 1:
        raise ValueError(f"strategy.pipeline.splitPoints: {len(points)} points make {len(points) + 1} stages but "
                         f"there are {stages} processes; give {stages - 1} points or leave it empty (auto)")
    return points


def bind_to_device_copy(stage_module: torch.nn.Module, copies: dict[str, torch.Tensor],
                        device: torch.device) -> None:
    """Point the stage's parameters and buffers at `copies` (by name), adding the ones not copied yet."""
    for prefix, module in stage_module.named_modules():
        for kind in (module._parameters, module._buffers):
            for leaf, tensor in kind.items():
                if tensor is None:
                    continue
                name = f"{prefix}.{leaf}" if prefix else leaf
                if name not in copies:
                    moved = tensor.detach().to(device)
                    is_param = isinstance(tensor, torch.nn.Parameter)
                    copies[name] = torch.nn.Parameter(moved, requires_grad=False) if is_param else moved
                kind[leaf] = copies[name]


def stage_graphs(stage_module: torch.nn.Module) -> list[torch.fx.GraphModule]:
    """The graph modules a traced stage runs (its own and its unflattened submodules'), each once."""
    graphs: dict[int, torch.fx.GraphModule] = {}
    for module in stage_module.modules():
        graph_module = module if isinstance(module, torch.fx.GraphModule) else getattr(module, "graph_module", None)
        if isinstance(graph_module, torch.fx.GraphModule):
            graphs.setdefault(id(graph_module.graph), graph_module)
    return list(graphs.values())


def burned_devices(graph_module: torch.fx.GraphModule, device: torch.device) -> list[torch.fx.Node]:
    """Ops of the graph with a device other than `device` among their positional arguments."""
    return [node for node in graph_module.graph.nodes if node.op == "call_function"
            and any(isinstance(a, torch.device) and a != device for a in node.args)]


def retarget_positional_devices(stage_module: torch.nn.Module, device: torch.device) -> int:
    """Point devices that tracing burned into ops' positional arguments at `device`; return how many.

    Tracing on the CPU records `x.to(y.device)` as `aten.to.device(x, cpu)`: Llama's rotary embedding
    then ran on the CPU against the stage's GPU tensors ("found at least two devices"). torch's
    `build_stage` rewrites `device=` keywords only (`_modify_graph_op_device`)."""
    changed = 0
    for graph_module in stage_graphs(stage_module):
        nodes = burned_devices(graph_module, device)
        for node in nodes:
            node.args = tuple(device if isinstance(a, torch.device) else a for a in node.args)
        if nodes:
            graph_module.recompile()
        changed += len(nodes)
    return changed


def next_tokens(logits: torch.Tensor, ends: list[int]) -> torch.Tensor:
    """Greedy pick of each row's next token from the logits at its last filled position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, torch.tensor(ends, device=logits.device) - 1].argmax(-1)


def unwrap_inner_no_grad(model: torch.nn.Module) -> list[str]:
    """Give modules whose class forward is `@torch.no_grad()`-decorated the undecorated forward."""
    unwrapped = []
    for name, module in model.named_modules():
        forward = type(module).forward
        if hasattr(forward, "__wrapped__") and forward.__code__.co_filename.endswith("_contextlib.py"):
            module.forward = types.MethodType(forward.__wrapped__, module)
            unwrapped.append(name)
    return unwrapped


@register
class PipelineParallel(Strategy):
    name = "pipeline"
    model: Any
    tokenizer: Any

    def load(self) -> None:
        spec, world = self.ctx.job.spec, self.ctx.dist.world_size
        if spec.task.type != "text-generation":
            raise ValueError("spec.strategy.type: pipeline runs transformers models: use task.type text-generation")
        if world < 2:
            raise ValueError("spec.strategy.type: pipeline needs at least 2 processes (workers.nodes * processes)")
        check_parameters(spec.task.parameters)
        self.model, self.tokenizer = load_lm(self.ctx.model_dir, spec.model)
        self.model.config.use_cache = False
        unwrap_inner_no_grad(self.model)
        options = spec.strategy.pipeline
        self.num_chunks = options.num_chunks if options else 2
        self.gather = bool(options and options.gather_output)
        points = list(options.split_points) if options else []
        self.split_points = (check_split_points(self.model, points, world) if points
                             else auto_split_points(self.model, world))
        self.rows = math.ceil(spec.strategy.batch_size / self.num_chunks) * self.num_chunks
        self.schedules: dict[int, Any] = {}
        self.stage_weights: dict[str, torch.Tensor] = {}
        self.owner = 0 if self.gather else world - 1

    def _schedule(self, length: int) -> Any:
        """The pipeline for buffers of `length` tokens (traced once per length)."""
        from torch.distributed.pipelining import ScheduleGPipe, SplitPoint, pipeline

        if length not in self.schedules:
            example = torch.zeros(self.rows // self.num_chunks, length, dtype=torch.long)
            try:
                pipe = pipeline(self.model, mb_args=(example,),
                                split_spec={p: SplitPoint.BEGINNING for p in self.split_points})
            finally:  # torch wraps each split module's forward in place; a second trace would wrap the wrapper
                modules = dict(self.model.named_modules())
                for point in self.split_points:
                    modules[point].forward = modules[point].__dict__.pop("_orig_forward")
            device = torch.device(self.ctx.dist.device)
            stage_module = pipe.get_stage_module(self.ctx.dist.rank)
            bind_to_device_copy(stage_module, self.stage_weights, device)
            retarget_positional_devices(stage_module, device)
            stage = pipe.build_stage(self.ctx.dist.rank, device=device)
            self.schedules[length] = ScheduleGPipe(stage, self.num_chunks)
        return self.schedules[length]

    def run(self, items: Sequence[Item]) -> Iterator[Result]:
        for start in range(0, len(items), self.rows):
            chunk = list(items[start:start + self.rows])
            texts, seconds = self._generate(chunk)
            if self.ctx.dist.rank == self.owner:
                for item, text in zip(chunk, texts, strict=True):
                    yield Result(item=item, output=text, seconds=seconds / len(chunk))

    def _buffer_length(self, prompts: list[list[int]], budgets: list[int]) -> int:
        need = max(len(p) + b for p, b in zip(prompts, budgets, strict=True))
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or getattr(
            self.model.config, "n_positions", 0) or need)
        if need > limit:
            raise ValueError(f"task.parameters.max_new_tokens: prompt + new tokens ({need}) exceed the model's "
                             f"{limit} positions")
        return min(limit, math.ceil(need / LENGTH_BUCKET) * LENGTH_BUCKET)

    def _generate(self, chunk: list[Item]) -> tuple[list[str], float]:
        """Greedy decoding of one chunk; every rank runs the same steps and ends with the same tokens."""
        import time

        began = time.perf_counter()
        task_params = self.ctx.job.spec.task.parameters
        budgets = [check_parameters(item_parameters(task_params, item)) for item in chunk]
        prompts = [self.tokenizer(item.prompt)["input_ids"] or [self.tokenizer.eos_token_id] for item in chunk]
        length = self._buffer_length(prompts, budgets)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = torch.device(self.ctx.dist.device)
        buf = torch.full((self.rows, length), pad, dtype=torch.long, device=device)
        ends = [len(p) for p in prompts] + [1] * (self.rows - len(chunk))
        for row, ids in enumerate(prompts):
            buf[row, :len(ids)] = torch.tensor(ids, device=device)
        active = [budget > 0 for budget in budgets] + [False] * (self.rows - len(chunk))
        steps = [0] * self.rows
        schedule = self._schedule(length)
        while any(active):
            with torch.no_grad():
                next_tokens = self._step(schedule, buf, ends)
            for row in range(len(chunk)):
                if active[row]:
                    buf[row, ends[row]] = next_tokens[row]
                    ends[row] += 1
                    steps[row] += 1
                    active[row] = steps[row] < budgets[row] and int(next_tokens[row]) != self.tokenizer.eos_token_id
        texts = [self.tokenizer.decode(buf[row, len(prompts[row]):ends[row]].tolist(), skip_special_tokens=True)
                 for row in range(len(chunk))]
        return texts, time.perf_counter() - began

    def _step(self, schedule: Any, buf: torch.Tensor, ends: list[int]) -> torch.Tensor:
        """One forward through all stages; the last picks the next tokens and broadcasts them."""
        rank, last = self.ctx.dist.rank, self.ctx.dist.world_size - 1
        tokens = torch.zeros(buf.shape[0], dtype=torch.long, device=buf.device)
        if rank == 0:
            schedule.step(buf)
        elif rank == last:
            out = schedule.step()
            tokens = next_tokens(out[0] if isinstance(out, tuple | list) else out, ends)
        else:
            schedule.step()
        dist.broadcast(tokens, src=last)
        return tokens
