"""Run a command in a built image as a container runtime would: the image's user, env and working
directory, a read-only root filesystem, and writable tmpfs mounts only where a pod would mount volumes.

buildah makes a working container of the image (its root filesystem as a folder); the command runs
chrooted into it in its own mount and pid namespaces, the root bind-mounted read-only.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Image:
    """A built image in a buildah storage."""

    name: str
    storage: Path
    driver: str  # overlay or vfs, as hack/build-images.sh chose

    def buildah(self, *args: str) -> str:
        argv = ["buildah", "--root", str(self.storage), "--runroot", str(self.storage.parent / "run"),
                "--storage-driver", self.driver, *args]  # fmt: skip
        env = {"STORAGE_DRIVER": self.driver, "BUILDAH_ISOLATION": "chroot",
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout

    def config(self) -> dict[str, Any]:
        """The OCI image config (User, Env, Entrypoint, WorkingDir, ...)."""
        inspected = json.loads(self.buildah("inspect", "--type", "image", self.name))
        return dict(inspected["OCIv1"]["config"])


class Container:
    """A working container of an image; `run` executes commands in it, `close` removes it."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.config = image.config()
        self.id = image.buildah("from", "--pull=never", "--quiet", image.name).strip()
        self.root = Path(image.buildah("mount", self.id).strip())

    def run(
        self, argv: list[str], *, writable: tuple[str, ...] = ("/tmp",), timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """`argv` as the image's user, in its env and working directory, on a read-only root where only the
        `writable` paths (fresh tmpfs mounts, as a pod's emptyDirs) take writes."""
        user = self.config.get("User") or "0:0"
        env = self.config.get("Env") or []
        workdir = self.config.get("WorkingDir") or "/"
        root = shlex.quote(str(self.root))
        # As a container runtime does: the host's name resolution files over the image's (none in a Debian base).
        mounts = [f"touch {root}/etc/{f} && mount --bind /etc/{f} {root}/etc/{f}" for f in ("hosts", "resolv.conf")]
        mounts += [f"mount --rbind {root} {root}", f"mount -o remount,bind,ro {root}",
                  f"mount -t proc proc {root}/proc", f"mount --rbind /dev {root}/dev"]  # fmt: skip
        mounts += [f"mount -t tmpfs -o mode=1777 tmpfs {root}{shlex.quote(path)}" for path in writable]
        inner = ["env", "-i", *env, "sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]
        script = " && ".join([*mounts, f"exec chroot --userspec={shlex.quote(user)} {root} {shlex.join(inner)}"])
        return subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip

    def size(self) -> int:
        """Bytes of the image's root filesystem, uncompressed."""
        argv = ["du", "-sb", "--one-file-system", str(self.root)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True)
        return int(out.stdout.split()[0])

    def close(self) -> None:
        self.image.buildah("rm", self.id)

