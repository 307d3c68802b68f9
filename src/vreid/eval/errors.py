"""The error for features that cannot be scored as asked (no query can be matched)."""
from __future__ import annotations

from vreid.errors import VreidError


class EvaluationError(VreidError, ValueError):
    """Evaluation would print meaningless numbers (e.g. no query has a match); the message says why and the fix."""
