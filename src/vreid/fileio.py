"""Atomic file writes: everything vreid writes goes to a temporary name first, then is renamed into place."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@functools.lru_cache(maxsize=1)
def process_umask() -> int:
    """The process umask, read once without changing it (os.umask would briefly set it, racing with threads)."""
    umask = _umask_from_proc_status()
    return _umask_from_probe_file() if umask is None else umask


def _umask_from_proc_status() -> int | None:
    """The `Umask:` line of /proc/self/status (Linux 4.7+), or None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_from_probe_file() -> int:
    """Create a file asking for mode 0o777 and see which bits the umask took away."""
    with tempfile.TemporaryDirectory(prefix=".vreid-umask.") as folder:
        probe = os.path.join(folder, "probe")
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o777))
        return 0o777 & ~os.stat(probe).st_mode


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target`, on error it is removed.

    Writers that take a path (torch, safetensors, faiss, PIL) write to the yielded path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) replace the file: set the mode open() would give
        os.chmod(tmp_path, 0o666 & ~process_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def give_default_mode(folder: str | os.PathLike) -> None:
    """Give a folder made by mkdtemp (0700) the mode mkdir would have given it."""
    os.chmod(folder, 0o777 & ~process_umask())


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
