"""The CLI's one error path: expected failures print one `error:` line with the fix; `--debug` shows tracebacks."""
from __future__ import annotations

import errno
import sys
from typing import Any

import click
import typer.core
from rich.console import Console

from vreid.errors import VreidError

err_console = Console(stderr=True)

#: Set by the `--debug` option of the `vreid` command: re-raise instead of printing one line.
DEBUG = {"on": False}


def _os_error_line(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    reason = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on the device; free some space or point the output at another disk"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{reason}; choose a folder you can write to (output_dir=..., -o ...)"
    if e.errno == errno.ENOENT:
        return f"{where}{reason}; check the path"
    return f"{where}{reason}"


def describe(e: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(e, VreidError):
        return str(e), e.exit_code
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        SafetensorError = ()  # type: ignore[assignment]
    if SafetensorError and isinstance(e, SafetensorError):
        return (f"not a readable safetensors file ({e}); the file is truncated or of another format: "
                "pass a file written by vreid or by safetensors"), 2
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(e, Image.DecompressionBombError):
        return (f"image too large to decode safely ({e}); resize it or remove it from the dataset "
                "(run `vreid data check`)"), 2
    if isinstance(e, UnidentifiedImageError):
        return f"{e}; the file is not an image PIL can read: re-extract it or remove it from the dataset", 2
    if isinstance(e, OSError):
        return _os_error_line(e), 2
    return None


def report(e: BaseException) -> int:
    """Print the one line for `e` and return the exit code; re-raise bugs."""
    described = describe(e)
    if described is None:
        raise e
    message, code = described
    err_console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    return code


class ErrorReportingGroup(typer.core.TyperGroup):
    """Click group whose commands' expected failures end as one `error:` line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            if DEBUG["on"]:
                raise
            err_console.print("error: interrupted", highlight=False)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - sorted by describe(); bugs are re-raised
            if DEBUG["on"] or describe(e) is None:
                raise
            sys.exit(report(e))
