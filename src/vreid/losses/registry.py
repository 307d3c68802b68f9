"""The loss name table."""
from __future__ import annotations

from torch import nn

from vreid.registry import Registry

#: name -> loss module class.
LOSSES: Registry[type[nn.Module]] = Registry("loss")
