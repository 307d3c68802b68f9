"""The errors of exporting and of reading back an export; each message names the file and the fix."""
from __future__ import annotations

from vreid.errors import VreidError


class ExportError(VreidError):
    """An export that cannot be made or read: a missing run, an unsupported layer, a foreign .onnx file."""


class ParityError(ExportError):
    """The exported graph does not compute what the PyTorch model computes (beyond the tolerance)."""
