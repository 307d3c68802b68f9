"""`vapc`: viewpoint-aware progressive clustering for unsupervised vehicle Re-ID (Zheng, Sun, Li, Tang, T-ITS;
arXiv 2011.09099; no official code: a reconstruction, docs/methods/vapc.md).

`usl` with one backbone (EMA teacher, cluster-memory proxy softmax + batch-hard softmax-triplet), its labels from
the `viewpoint_progressive` source (vreid.unsup.vapc_source): a viewpoint predictor trained before epoch 1 on
viewpoint labels only, clustering inside each predicted viewpoint, cross-view merging under a threshold that
relaxes from tau_0 to tau_max over T_p epochs. With `adaptation.source_root` the run first trains `bot`
(supervised) on that labelled source dataset and starts the backbone from it (domain adaptation).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from vreid.config.loader import FieldError, bounds, choices
from vreid.engine.stages import Stage
from vreid.methods.base import METHODS
from vreid.methods.usl import UnsupervisedReid, UslConfig
from vreid.unsup.label_sources import label_source_names
from vreid.unsup.schedules import EpsSchedule
from vreid.unsup.vapc import MergeSchedule
from vreid.unsup.viewpoint import ViewpointPredictorConfig

if TYPE_CHECKING:
    from vreid.config.schema import ExperimentConfig


@dataclass
class SynthSourceConfig:
    """A synthetic source world rendered into `adaptation.source_root` when that folder holds no dataset yet."""

    preset: str = "medium"
    ids: int = field(default=160, metadata=bounds(2))
    cameras: int = field(default=8, metadata=bounds(2))
    seed: int = 1


@dataclass
class AdaptationConfig:
    """Domain adaptation: `source_root` "" = none (the backbone starts from its `pretrained`); otherwise a stage
    `source` trains `bot` on that labelled dataset for `epochs` and the Re-ID backbone starts from its weights."""

    source_root: str = ""
    source_layout: str = "veri776"
    epochs: int = field(default=10, metadata=bounds(1))
    lr: float | None = None                 # None: the run's optim.lr
    synth: SynthSourceConfig | None = None  # render a synthetic source world there if it is missing


@dataclass
class VapcConfig(UslConfig):
    name: str = "vapc"
    labels: str = field(default="viewpoint_progressive", metadata=choices(registry=label_source_names))
    eps: EpsSchedule = field(default_factory=lambda: EpsSchedule(name="fixed", eps=0.6))   # eps_intra
    merge: MergeSchedule = field(default_factory=MergeSchedule)
    #: a helper model, not a Re-ID trunk (vreid.viz.leaderboard.trunk_and_start leaves it out)
    viewpoint: ViewpointPredictorConfig = field(default_factory=ViewpointPredictorConfig,
                                                metadata={"reid_trunk": False})
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)

    def validate(self) -> None:
        super().validate()
        if len(self.backbones) != 1:
            raise FieldError("backbones", f"vapc trains one backbone, got {len(self.backbones)}; use usl to "
                                          "co-train several")
        if self.neighborhood_fraction != 1.0:
            raise FieldError("neighborhood_fraction", "vapc clusters every training image (the viewpoint subsets "
                                                      "already split the set); leave it at 1.0")


@METHODS.register("vapc")
class ViewpointProgressiveReid(UnsupervisedReid):
    """usl's single-backbone model and losses; labels from `cfg.labels` (default `viewpoint_progressive`)."""

    Config = VapcConfig

    @classmethod
    def training_stages(cls, cfg: "ExperimentConfig") -> list[Stage]:
        """`source` (bot on the labelled source) then `adapt` (vapc from its weights), with adaptation on."""
        if not cfg.model.adaptation.source_root:
            return []
        return [Stage("source", source_stage_config), Stage("adapt", adapt_stage_config)]


def source_stage_config(cfg: "ExperimentConfig", earlier: Mapping[str, Path]) -> "ExperimentConfig":
    """Supervised `bot` on the source dataset, with vapc's backbone and data settings (rendered first when asked)."""
    from vreid.methods.bot import BotConfig

    ada = cfg.model.adaptation
    if ada.synth is not None and not (Path(ada.source_root) / "vreid_labels.csv").is_file():
        from vreid.synth import SynthConfig, render_dataset

        render_dataset(Path(ada.source_root), SynthConfig(ids=ada.synth.ids, cameras=ada.synth.cameras,
                                                          seed=ada.synth.seed, preset=ada.synth.preset,
                                                          size=max(cfg.data.height, cfg.data.width),
                                                          layout=ada.source_layout, workers=1))
    cfg.data.root, cfg.data.layout, cfg.data.test_size = ada.source_root, ada.source_layout, None
    cfg.model = BotConfig(backbone=copy.deepcopy(cfg.model.backbones[0]))
    cfg.schedule.epochs = ada.epochs
    cfg.schedule.name, cfg.schedule.warmup_epochs = "warmup_cosine", min(cfg.schedule.warmup_epochs, ada.epochs - 1)
    if ada.lr is not None:
        cfg.optim.lr = ada.lr
    cfg.train.eval_every_epochs = 0
    return cfg


def adapt_stage_config(cfg: "ExperimentConfig", earlier: Mapping[str, Path]) -> "ExperimentConfig":
    """vapc on the target, its backbone started from the source stage's backbone."""
    cfg.model.backbones[0].pretrained = str(source_backbone_weights(earlier["source"]))
    return cfg


def source_backbone_weights(folder: Path) -> Path:
    """The source model's backbone alone, in the backbone's own key names (any trunk family loads it as its
    `pretrained`), as `<folder>/backbone.safetensors` (rewritten each time: the stage may have been trained again)."""
    from vreid.engine.bundle import load_bundle
    from vreid.engine.checkpoint import save_model_weights

    out = Path(folder) / "backbone.safetensors"
    save_model_weights(out, load_bundle(folder).backbone)
    return out
