"""The method contract: a registered nn.Module that turns batches into named losses and images into embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vreid.registry import Registry

if TYPE_CHECKING:
    from vreid.config.schema import ExperimentConfig, OptimConfig
    from vreid.engine.hooks import Hook
    from vreid.engine.stages import Stage

#: name -> ReidMethod subclass; each class carries its own `Config` dataclass. The methods (every public module of
#: vreid.methods) are imported on the first lookup, so the engine can import this contract without them.
METHODS: Registry[type["ReidMethod"]] = Registry("method", plugins="vreid.methods")

#: A training batch: images (B,3,H,W) float; labels (B,) long class index used by the losses (dataset
#: labels or pseudo-labels); vehicle_ids, camera_ids, viewpoints (B,) long with -1 where unknown;
#: indices (B,) long position of each image in the training record list.
Batch = dict[str, torch.Tensor]


#: metadata name in method configs -> the ImageRecord field that carries it
METADATA_FIELDS = {"camera": "camera_id", "viewpoint": "viewpoint"}


@dataclass(frozen=True)
class MetadataNeed:
    """One image label a method reads: the ImageRecord field, the config key that turns it on, the setting without."""

    field: str  # "camera_id" or "viewpoint"
    key: str  # e.g. "model.metadata"
    without: str  # e.g. "model.metadata=camera"


@dataclass
class MethodConfig:
    """Base of every method's config; subclasses add their own fields."""

    name: str = "bot"

    def required_metadata(self) -> list[MetadataNeed]:
        """The labels these settings make the method read from every training image; none by default."""
        return []

    def retrieval_metric(self) -> str | None:
        """The distance (a name in vreid.eval.distance.DISTANCES) these settings' embeddings must be ranked by,
        which then becomes the run's `eval.metric`; None: the embeddings are plain rows, `eval.metric` chooses."""
        return None


@dataclass
class DataInfo:
    """What a method may know about its training data when it is built."""

    num_classes: int
    num_cameras: int = 1
    num_viewpoints: int = 8
    height: int = 256
    width: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    #: the size of the feature rows a features method trains on (0: it trains on images)
    feature_dim: int = 0


class ReidMethod(nn.Module):
    """Base class. Subclasses set `Config`, build modules in __init__, and implement the three calls.

    - forward(batch) -> dict of named output tensors (training mode);
    - losses(outputs, batch) -> dict of named, already weighted scalar losses (the trainer sums them);
    - embed(images, camera_ids=None, viewpoints=None) -> (B, D) retrieval features (eval mode).
    Optional: hooks() for step/epoch callbacks, param_groups() for per-part learning rates, attention_maps(images)
    for the report.
    """

    Config: type[MethodConfig] = MethodConfig
    #: True for methods that learn without identity labels (they provide a label-refresh hook).
    unsupervised: bool = False
    #: "images", or "features": the method trains on rows of features extracted by another run (its config's
    #: `features` key; vreid.data.features gives the batches) and `embed` takes those rows' neighbourhoods.
    inputs: str = "images"

    def __init__(self, cfg: MethodConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def losses(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def embed(
        self,
        images: torch.Tensor,
        camera_ids: torch.Tensor | None = None,
        viewpoints: torch.Tensor | None = None,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def hooks(self) -> list["Hook"]:
        return []

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, M, h, w) non-negative maps of where the method looks in each image, for the report's attention
        view (vreid.viz.report); None for a method without such maps."""
        return None

    @classmethod
    def training_stages(cls, cfg: "ExperimentConfig") -> list["Stage"]:
        """The stages one `vreid train` runs for this method (vreid.engine.stages); [] = a single plain run."""
        return []

    def param_groups(self, optim: "OptimConfig") -> list[dict[str, Any]]:
        """Default: every trainable parameter; biases get `bias_lr_factor` and `weight_decay_bias`."""
        weights, biases = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (biases if name.endswith("bias") else weights).append(p)
        groups = [{"params": weights, "lr": optim.lr, "weight_decay": optim.weight_decay}]
        if biases:
            groups.append(
                {"params": biases, "lr": optim.lr * optim.bias_lr_factor, "weight_decay": optim.weight_decay_bias}
            )
        return groups


def build_method(cfg: MethodConfig, info: DataInfo) -> ReidMethod:
    return METHODS.get(cfg.name)(cfg, info)
