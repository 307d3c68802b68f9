"""The `viewpoint_progressive` label source (VAPC): before the first epoch it trains the viewpoint predictor (or
reads `viewpoint_labels.csv`) and predicts a viewpoint bin for every training image; before every epoch it
clusters inside each viewpoint subset and merges clusters across viewpoints at the epoch's threshold tau_t.

Reads from its method's config: `viewpoint` (ViewpointPredictorConfig), `clustering`, `eps` (intra-view DBSCAN
eps schedule), `schedule_epochs`, `merge` (MergeSchedule). True ids are read only for the clusters.csv report.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from rich.console import Console

from vreid.fileio import write_json_atomic
from vreid.unsup.clustering import cluster_stats
from vreid.unsup.label_sources import LABEL_SOURCES, LabelContext, LabelSource, TrainLabels, loosen_eps
from vreid.unsup.vapc import ProgressiveLabels, ViewGraphs, progressive_labels
from vreid.unsup.viewpoint import (
    ViewpointPredictions, accuracy_report, predict_viewpoints, read_viewpoint_labels, train_viewpoint_classifier,
)

console = Console(stderr=True)
VIEWPOINT_REPORT = "viewpoint.json"


def predict_training_viewpoints(ctx: LabelContext, cfg: Any) -> tuple[ViewpointPredictions, dict[str, Any]]:
    """Viewpoint bins of the training images, and the report: `heldout_accuracy` of the predictor (vehicles of its
    own labelled set it did not train on) and, where the run's training images have viewpoint labels,
    `run_images_accuracy` on them (a report only; with the target's own labels it includes the images trained on)."""
    trainer, vcfg = ctx.trainer, cfg.viewpoint
    records, data = trainer.dataset.train, trainer.cfg.data
    if vcfg.labels_csv:
        pred = read_viewpoint_labels(vcfg.labels_csv, records, trainer.dataset.root, vcfg.view_bins)
        report: dict[str, Any] = {"bins": list(vcfg.view_bins.names), "from": vcfg.labels_csv}
    else:
        source = records
        if vcfg.source.root:
            from vreid.data import load_dataset

            source_data = dataclasses.replace(data, root=vcfg.source.root, layout=vcfg.source.layout,
                                              test_size=None)
            source = load_dataset(source_data).train
        model, report = train_viewpoint_classifier(source, vcfg, data, trainer.device, seed=trainer.cfg.seed)
        report["trained_on"] = vcfg.source.root or "the training images' own viewpoint labels (no ids)"
        pred = predict_viewpoints(model, records, data, trainer.device)
        del model
    if any(r.viewpoint is not None for r in records):
        report.update(accuracy_report(pred, records, vcfg.view_bins, "run_images"))
    report["predicted_per_bin"] = {n: int((pred.bins == b).sum()) for b, n in enumerate(vcfg.view_bins.names)}
    report["left_out_low_confidence"] = int((pred.kept(vcfg.min_confidence) < 0).sum())
    return pred, report


@LABEL_SOURCES.register("viewpoint_progressive")
class ViewpointProgressiveLabels(LabelSource):
    """Intra-viewpoint clustering, then progressive cross-view merging; one model (the method's first)."""

    def __init__(self, cfg: Any = None) -> None:
        super().__init__(cfg)
        self.views: np.ndarray | None = None     # predicted bin per training record (-1 = left out)

    def _views(self, ctx: LabelContext) -> np.ndarray:
        if self.views is None:
            pred, report = predict_training_viewpoints(ctx, self.cfg)
            self.views = pred.kept(self.cfg.viewpoint.min_confidence)
            acc = report.get("heldout_accuracy", report.get("run_images_accuracy"))
            console.print(f"vapc: viewpoint bins {report['bins']}; predictor accuracy "
                          f"{'n/a' if acc is None else f'{100 * acc:.1f} %'} "
                          f"({'held-out vehicles' if 'heldout_accuracy' in report else 'training images'}); "
                          f"per bin {report['predicted_per_bin']}", highlight=False)
            if ctx.trainer.dist.is_main:
                write_json_atomic(ctx.trainer.output_dir / VIEWPOINT_REPORT, report)
        return self.views

    def refresh(self, ctx: LabelContext) -> TrainLabels:
        cfg, n = self.cfg, ctx.num_records
        views = self._views(ctx)
        subset = np.arange(n)
        feats = ctx.extract(ctx.models[0], subset)
        t, total = ctx.epoch + 1, cfg.schedule_epochs or ctx.epochs
        eps, tau = cfg.eps(t, total), cfg.merge(t)

        graphs = ViewGraphs.build(feats, views, cfg.clustering)   # once, for every eps tried

        def attempt(e: float) -> tuple[ProgressiveLabels, int]:
            r = progressive_labels(feats, views, e, tau, cfg.clustering, cfg.merge.centre_views, graphs)
            return r, int(r.labels.max()) + 1

        result, eps = loosen_eps(attempt, eps, ctx.trainer.cfg.data.ids_per_batch, ctx.method.cfg.name)
        stats = cluster_stats(result.labels, ctx.true_ids(subset))
        row = {"epoch": t, "backbone": 0, "eps": round(eps, 4), "tau": round(tau, 4), **stats.as_row(),
               "intra_clusters": result.intra_clusters, "cross_view_merges": result.merges,
               "merge_rounds": result.rounds, "no_viewpoint": int((views < 0).sum()),
               "trained_images": int((result.labels >= 0).sum())}
        return TrainLabels(labels=result.labels, per_model=[result.labels], features=[feats], subset=subset,
                           report_rows=[row])

    def state_dict(self) -> dict[str, Any]:
        return {"views": None if self.views is None else torch.from_numpy(self.views)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.views = None if state.get("views") is None else state["views"].numpy()
