"""The worker's outer process and the CLI's light commands must not import torch.

The outer `kubeinfer-worker` only runs torchrun; importing torch and diffusers there costs every pod
seconds of CPU and ~600 MB of memory before any rank starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["kubeinfer_runtime.worker", "kubeinfer_runtime.cli", "kubeinfer_runtime.inputs"])
def test_module_does_not_import_torch(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing {module} pulled in {out}"


def test_strategy_for_still_finds_every_strategy() -> None:
    code = ("from kubeinfer_runtime.strategies import strategy_for, STRATEGIES; strategy_for('data'); "
            "print(sorted(STRATEGIES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['context', 'data', 'deviceMap', 'pipeline']"


def test_ranks_load_triton_only_where_an_nvidia_device_is() -> None:
    """hack/venv.sh leaves triton out of a GPU-less venv (hack/gpu-only-packages.txt): a rank's diffusers import
    would load it through torch._dynamo, 0.45 CPU-s in each of the hundreds of ranks `make test` starts. With a
    device, CUDA torch.compile needs it."""
    code = "import sys, diffusers.utils.torch_utils; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(Path("/dev/nvidiactl").exists()), "run `rm .venv/.stamp && make venv` after a GPU change"
