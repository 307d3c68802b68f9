"""Re-ID methods: each is one registered module (backbone + neck/head + losses) and a config dataclass.

This package's namespace is the contract only (vreid.methods.base), so the engine can import it without the
methods. The first lookup in METHODS imports every public module here: adding a method is adding a file that
registers itself.
"""
from vreid.methods.base import METHODS, Batch, DataInfo, MethodConfig, ReidMethod, build_method

__all__ = ["METHODS", "Batch", "DataInfo", "MethodConfig", "ReidMethod", "build_method"]
