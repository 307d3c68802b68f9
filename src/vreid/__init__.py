"""vreid: vehicle re-identification toolkit (datasets, methods, training, evaluation, search)."""

__version__ = "0.1.0"
