"""Both Dockerfile targets, built with buildah (hack/build-images.sh) and smoke-tested as containers.

Each image runs as its own user (uid 1000) on a read-only root filesystem with tmpfs where a pod
mounts its emptyDirs: the operator's entrypoint starts, and the runtime runs the built-in demo (a
tiny Flux model, 2 processes, torch.distributed) end to end. Neither image carries a compiler or pip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.container import Container, Image

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.images, pytest.mark.xdist_group("images")]
#: Where the worker pod mounts emptyDirs (operator/kubeinfer_operator/builders/podsecurity.py).
RUNTIME_WRITABLE = ("/tmp", "/home/kubeinfer")


@pytest.fixture(scope="module")
def built() -> dict[str, Image]:
    """Build both images (cached layers make a warm build short); name -> image."""
    result = subprocess.run(["bash", "hack/build-images.sh"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    lines = result.stdout.splitlines()
    _, storage, driver = next(line.split() for line in lines if line.startswith("storage "))
    names = [line.split()[1] for line in lines if line.startswith("image ")]
    return {name.split("/")[-1].split(":")[0].removeprefix("kubeinfer-"): Image(name, Path(storage), driver)
            for name in names}


@pytest.fixture(scope="module")
def containers(built: dict[str, Image]) -> Iterator[dict[str, Container]]:
    """One working container per image, for every test of the module (with vfs, each copies the whole image)."""
    made: dict[str, Container] = {}
    try:
        for name, image in built.items():
            made[name] = Container(image)
        yield made
    finally:
        for running in made.values():
            running.close()


@pytest.fixture(params=["operator", "runtime"])
def container(request: pytest.FixtureRequest, containers: dict[str, Container]) -> Container:
    return containers[request.param]


def test_both_images_are_built(built: dict[str, Image]) -> None:
    assert sorted(built) == ["operator", "runtime"]


def test_runs_as_uid_1000_on_a_read_only_root(container: Container) -> None:
    assert container.config["User"] == "1000:1000"
    probe = """
import os, sys
def write(path):
    try:
        open(path, "w").close()
        return "ok"
    except OSError as err:
        return err.strerror
print(os.getuid(), os.getgid(), write("/tmp/x"), write(sys.prefix + "/x"), write("/etc/x"))
"""
    result = container.run(["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(maxsplit=2) == ["1000", "1000", "ok Read-only file system Read-only file system"]


def test_carries_no_compiler_and_no_pip(container: Container) -> None:
    probe = """
import importlib.util, shutil
print(sorted(t for t in ("cc", "gcc", "c++", "g++", "clang", "pip", "pip3", "uv") if shutil.which(t)),
      importlib.util.find_spec("pip") is not None)
"""
    result = container.run(["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False", result.stdout


#: Prints the modules (of those `import` loads) whose bytecode is missing or stale: a read-only root cannot
#: cache it, so each of those would be compiled from source in every pod start (a cold start's seconds).
STALE_BYTECODE = """
import importlib.util, os, struct, sys
import {modules}
def fresh(module):
    source, cached = getattr(module, "__file__", None), getattr(module, "__cached__", None)
    if not (isinstance(source, str) and isinstance(cached, str) and source.endswith(".py")):
        return True  # built in, an extension, or a namespace that answers every attribute (torch.ops)
    try:
        with open(cached, "rb") as pyc:
            head = pyc.read(16)
    except OSError:
        return False
    flags, mtime, size = struct.unpack("<3I", head[4:16])
    stat = os.stat(source)
    unchecked_or_current = flags & 1 or (mtime, size) == (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
    return head[:4] == importlib.util.MAGIC_NUMBER and bool(unchecked_or_current)
print(len(sys.modules), sorted(name for name, module in list(sys.modules.items()) if not fresh(module)))
"""
#: What each image's processes import: the entrypoints and, for the worker's ranks, the model libraries.
ENTRY_MODULES = {"operator": "kopf, kubernetes, kubeinfer_operator.main",
                 "runtime": "torch, diffusers, transformers, accelerate, kubeinfer_runtime.worker, "
                            "kubeinfer_runtime.cli, kubeinfer_runtime.strategies.data"}  # fmt: skip


@pytest.mark.parametrize("image", sorted(ENTRY_MODULES))
def test_ships_current_bytecode_for_what_it_imports(containers: dict[str, Container], image: str) -> None:
    result = containers[image].run(["python", "-c", STALE_BYTECODE.format(modules=ENTRY_MODULES[image])])
    assert result.returncode == 0, result.stderr
    loaded, stale = result.stdout.split(maxsplit=1)
    assert int(loaded) > 300, result.stdout  # the probe saw the libraries, not an empty import
    assert stale.strip() == "[]", f"modules without current bytecode in the {image} image: {stale[:2000]}"


def test_operator_entrypoint_starts(containers: dict[str, Container]) -> None:
    running = containers["operator"]
    assert running.config["Entrypoint"] == ["kubeinfer-operator"]
    result = running.run([*running.config["Entrypoint"], "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubeinfer-operator"), result.stdout
    imports = running.run(["python", "-c", "import kopf, kubernetes, kubeinfer_operator; import torch"])
    assert "No module named 'torch'" in imports.stderr, "the operator image has no torch"


def test_runtime_runs_the_demo_as_a_pod_would(containers: dict[str, Container]) -> None:
    """The worker's libraries import, and `kubeinfer demo` renders its 6 images with 2 processes."""
    running = containers["runtime"]
    assert running.config["Entrypoint"] == ["kubeinfer-worker"]
    versions = running.run(["python", "-c", "import json, torch, diffusers, accelerate, transformers; "
                            "print(json.dumps([torch.__version__, diffusers.__version__]))"])  # fmt: skip
    assert versions.returncode == 0, versions.stderr
    assert json.loads(versions.stdout)[1] == "0.42.1"
    count = "import json; print(json.dumps([json.loads(line)['key'] for line in open('/tmp/out/manifest.jsonl')]))"
    demo = running.run(["sh", "-c", f'kubeinfer demo --output /tmp/out && python -c "{count}"'],
                       writable=RUNTIME_WRITABLE)  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "kubeinfer demo: done." in demo.stdout
    keys = json.loads(demo.stdout.strip().splitlines()[-1])
    assert len(keys) == 6 and len(set(keys)) == 6 and all(k.endswith(".png") for k in keys), keys
