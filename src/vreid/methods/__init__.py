"""Re-ID methods: each is one registered module (backbone + neck/head + losses) and a config dataclass.

Every module in this package is imported here, so adding a method is adding a file that registers itself.
"""
import importlib
import pkgutil

from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod, build_method

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Batch", "DataInfo", "MethodConfig", "ReidMethod", "build_method"]
