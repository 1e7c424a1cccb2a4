"""`make bench`: the CPU runtime-overhead benchmark, plus the GPU Flux benchmark when a CUDA GPU is visible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    subprocess.run([sys.executable, str(HERE / "runtime_overhead.py"), *sys.argv[1:]], check=True)
    import torch

    if torch.cuda.is_available():
        subprocess.run([sys.executable, str(HERE / "gpu_flux.py")], check=True)


if __name__ == "__main__":
    main()
