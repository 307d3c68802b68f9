"""The base of every error vreid expects: its message is a complete instruction (what, where, the fix)."""
from __future__ import annotations


class VreidError(Exception):
    """An expected failure. The CLI prints `error: <message>` and exits non-zero, without a traceback."""

    exit_code = 2


class RunStopped(VreidError):
    """A run stopped on SIGTERM/SIGINT after checkpointing; exits 128 + signal number, as shells do."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
