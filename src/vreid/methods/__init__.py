"""Re-ID methods: each is one registered module (backbone + neck/head + losses) and a config dataclass."""
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod, build_method
from vreid.methods import bot as _bot  # noqa: F401  (registers 'bot')

__all__ = ["METHODS", "Batch", "DataInfo", "MethodConfig", "ReidMethod", "build_method"]
