"""Directories that appear only when complete: write into a temporary sibling, then rename.

Files and folders written here get the modes of the process umask (0644 / 0755 by default),
not the 0700 of `tempfile.mkdtemp` or the 0600 that some writers (safetensors) use."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give `path` (recursively) the modes a plain `open` / `mkdir` would: 0666 / 0777 minus
    the process umask."""
    mask = _umask()
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                p = os.path.join(root, f)
                if not os.path.islink(p):
                    os.chmod(p, 0o666 & ~mask)


def fault_point(name: str) -> None:
    """Fault injection for tests: SIGKILL this process when `JAXUNLEARN_TEST_KILL` equals
    `name` (e.g. `export`: between two files of an HF export), or `name@I` in the process
    whose `JAX_PROCESS_ID` is I (one process of a multi-process run)."""
    want = os.environ.get("JAXUNLEARN_TEST_KILL")
    if want == name or want == f"{name}@{os.environ.get('JAX_PROCESS_ID')}":
        os.kill(os.getpid(), signal.SIGKILL)


def is_empty_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and not any(path.iterdir())


def refuse_existing(out: str | os.PathLike, overwrite: bool, what: str = "--out") -> None:
    """Refuse an existing non-empty `out` unless `overwrite` (then it is replaced whole once
    the new output is complete)."""
    out = Path(out)
    if out.exists() and not overwrite and not is_empty_dir(out):
        raise ValueError(f"{what} {out} already exists and is not empty; choose another "
                         "directory or pass --overwrite to replace it (whole, once the new "
                         "output is complete)")


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; on success it replaces `out_dir`, on any error
    it is removed and `out_dir` is left untouched."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        apply_umask(tmp)
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(src: Path, dst: Path) -> None:
    """Move the complete directory `src` to `dst`, replacing `dst` whole (never merging)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
