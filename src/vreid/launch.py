"""How this process was launched, read from the environment without importing torch (the CLI starts fast)."""
from __future__ import annotations

import os


def launched_as_main() -> bool:
    """Whether this process is rank 0 of its launch (torchrun sets RANK), before any process group exists."""
    return os.environ.get("RANK", "0") == "0"
