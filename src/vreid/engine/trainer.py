"""The generic training loop. It knows no method: a method gives outputs, named losses and embeddings; hooks
act around steps and epochs (pseudo-labels, momentum encoders, queues). A method that declares `inputs =
"features"` gets batches of extracted feature rows with their kNN lists (vreid.data.features) instead of images."""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rich.console import Console

from vreid.config.schema import ExperimentConfig
from vreid.data.features import FeatureBatches, NeighbourhoodTable, read_feature_file
from vreid.data.records import ReidDataset, relabel
from vreid.engine import checkpoint as ckpt
from vreid.engine.bundle import save_bundle, write_model_info
from vreid.engine.distributed import DistInfo, barrier, cleanup, init_distributed, max_over_ranks
from vreid.engine.hooks import Hook
from vreid.engine.metrics_log import MetricsLog
from vreid.engine.optim import build_optimizer
from vreid.engine.run_info import write_run_info
from vreid.engine.schedule import build_schedule
from vreid.errors import RunStopped
from vreid.methods import METHODS, DataInfo, ReidMethod, build_method

console = Console(stderr=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from vreid.config.loader import ConfigError

        detail = "cuda, but no CUDA device is visible; use train.device=cpu or auto"
        raise ConfigError(f"key 'train.device': {detail}", key="train.device", detail=detail)
    return torch.device(name)


def data_info(cfg: ExperimentConfig, dataset: ReidDataset, num_classes: int, feature_dim: int = 0) -> DataInfo:
    records = dataset.train + dataset.query + dataset.gallery
    return DataInfo(
        num_classes=num_classes,
        num_cameras=max((r.camera_id for r in records), default=0) + 1,
        height=cfg.data.height,
        width=cfg.data.width,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        feature_dim=feature_dim,
    )


class FeatureSource:
    """The feature rows of a features method (its config's `features`): the splits of a `vreid extract` .npz, or
    the splits embedded by the model of a run folder (with that model's own preprocessing)."""

    def __init__(self, source: str, cfg: ExperimentConfig, dataset: ReidDataset, device: torch.device) -> None:
        from vreid.config.loader import ConfigError

        if not source:
            detail = "this method trains on features: set it to a run folder or a `vreid extract` .npz file"
            raise ConfigError(f"key 'model.features': {detail}", key="model.features", detail=detail)
        self.path, self.cfg, self.dataset, self.device = Path(source), cfg, dataset, device
        if not self.path.exists():
            detail = f"{source} does not exist (a run folder or a `vreid extract` .npz file)"
            raise ConfigError(f"key 'model.features': {detail}", key="model.features", detail=detail)
        self._embedder: tuple[ReidMethod, Any] | None = None

    def split(self, name: str) -> tuple[torch.Tensor, np.ndarray]:
        """(features, vehicle ids) of split `name` (train, query or gallery)."""
        if self.path.suffix == ".npz":
            features, ids, _ = read_feature_file(self.path, name)
            return features, ids
        from vreid.engine.bundle import load_bundle
        from vreid.engine.extract import extract_features
        from vreid.engine.preprocessing import model_preprocessing

        if self._embedder is None:
            model = load_bundle(self.path).to(self.device)
            self._embedder = model, model_preprocessing(self.cfg, model.info, ())[0].data
        model, data_cfg = self._embedder
        records = getattr(self.dataset, name)
        features = extract_features(model, records, data_cfg, self.device, flip=self.cfg.eval.flip)
        return features, np.array([r.vehicle_id for r in records], dtype=np.int64)


class StopRequested(Exception):
    """Raised inside the loop after SIGTERM/SIGINT, once the current step is done and checkpointed."""


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hook_names(hooks: Sequence[Hook]) -> list[str]:
    """Stable checkpoint names: the class name, and ``#k`` for the k-th further hook of that class
    (``FreezeModules``, ``FreezeModules#1``), so adding or reordering other hooks renames none."""
    return _numbered_within_class([type(h).__name__ for h in hooks])


def _numbered_within_class(class_names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for cls in class_names:
        k = seen.get(cls, 0)
        names.append(f"{cls}#{k}" if k else cls)
        seen[cls] = k + 1
    return names


def hook_states(hooks: Sequence[Hook]) -> dict[str, dict[str, Any]]:
    """Every hook's state_dict under its stable name."""
    return {name: h.state_dict() for name, h in zip(hook_names(hooks), hooks)}


def _renamed_positional_hook_states(saved: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints before stable names keyed hooks ``<position>:<class>``; give them the stable names."""
    positional = [key.partition(":") for key in saved]
    if not all(sep and pos.isdigit() for pos, sep, _ in positional):
        return saved
    ordered = sorted(positional, key=lambda p: int(p[0]))
    names = _numbered_within_class([cls for _, _, cls in ordered])
    return {name: saved[f"{pos}:{cls}"] for name, (pos, _, cls) in zip(names, ordered)}


def load_hook_states(hooks: Sequence[Hook], saved: dict[str, Any]) -> None:
    """Give each hook the state saved under its name; a saved state no hook of this run takes is an error
    (an empty one is not: a stateless hook, e.g. a test's crash hook or a renamed freeze hook, loses nothing)."""
    by_name = dict(zip(hook_names(hooks), hooks))
    for name, state in _renamed_positional_hook_states(saved).items():
        if name not in by_name and not state:
            continue
        if name not in by_name:
            raise ckpt.CheckpointError(
                f"the checkpoint has state for hook {name!r}, which this run does not have (its hooks: "
                f"{', '.join(by_name) or 'none'}); resume with the configuration that wrote it")
        by_name[name].load_state_dict(state)


class Trainer:
    """Train `cfg.model` on `dataset.train`; evaluate on query/gallery.

    State that resume restores: weights, optimizer, AMP scaler, epoch and batch position, current labels,
    every hook's state_dict, and the RNG states. The learning rate is a pure function of progress.
    """

    def __init__(self, cfg: ExperimentConfig, dataset: ReidDataset, hooks: Sequence[Hook] = (),
                 method: ReidMethod | None = None) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.output_dir = Path(cfg.output_dir)
        self.device = pick_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        seed_everything(cfg.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.labels, self.id_map = relabel(dataset.train)
        self.features: FeatureSource | None = None
        self.feature_table: NeighbourhoodTable | None = None
        feature_dim = 0
        if (type(method) if method is not None else METHODS.get(cfg.model.name)).inputs == "features":
            self.features = FeatureSource(cfg.model.features, cfg, dataset, self.device)
            train_features, train_ids = self.features.split("train")
            self.labels = np.unique(train_ids, return_inverse=True)[1].tolist()
            feature_dim = train_features.shape[1]
        self.method = method or build_method(cfg.model, data_info(cfg, dataset, len(set(self.labels)), feature_dim))
        self.method.to(self.device)
        if self.features is not None:
            self.feature_table = self._neighbourhoods(train_features)
        self.model: torch.nn.Module = self.method
        if self.dist.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(self.method, "find_unused_parameters", False),
            )
        self.optimizer = build_optimizer(self.method.param_groups(cfg.optim), cfg.optim)
        self.lr_factor = build_schedule(cfg.schedule)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.hooks: list[Hook] = sorted([*self.method.hooks(), *hooks], key=lambda h: h.priority)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.steps_this_epoch = 0
        self.labels_version = 0
        self._stop: int | None = None  # the signal that asked the loop to stop
        self.log = MetricsLog(self.output_dir, cfg.train.tensorboard, enabled=self.dist.is_main)
        self.last_eval: dict[str, Any] = {}

    # ----- what hooks may call -------------------------------------------------------------------------
    def set_train_labels(self, labels: Sequence[int]) -> None:
        """Replace the training labels (class index per train record; -1 = leave the image out this epoch): the
        sampler's input. Methods with pseudo-labels get here through a label source (vreid.unsup.label_sources,
        refreshed by LabelSourceHook); until one refreshes, the labels are the dataset's own ids (`dataset`)."""
        if len(labels) != len(self.dataset.train):
            raise ValueError(f"got {len(labels)} labels for {len(self.dataset.train)} training images")
        self.labels = [int(x) for x in labels]
        self.labels_version += 1

    def embed_records(self, records) -> torch.Tensor:
        from vreid.engine.extract import extract_features

        return extract_features(self.method, records, self.cfg.data, self.device, amp=self.amp)

    def _neighbourhoods(self, features: torch.Tensor) -> NeighbourhoodTable:
        """Each training row's `method.neighbours` nearest other rows (blocked top-k, no N x N matrix)."""
        from vreid.rerank.contextual import nearest_neighbours

        x = torch.nn.functional.normalize(features.float(), dim=1)
        _, idx = nearest_neighbours(x, x, min(self.method.neighbours, len(x) - 1), offset=0)
        return NeighbourhoodTable(x, torch.tensor(self.labels), idx.cpu())

    # ----- loop ------------------------------------------------------------------------------------------
    def _batch_size(self) -> int:
        return self.cfg.data.ids_per_batch * self.cfg.data.images_per_id

    def _train_loader(self):
        from vreid.data import build_train_loader

        if self.feature_table is not None:  # no workers: the rows are in memory
            return FeatureBatches(self.feature_table, self._batch_size(), seed=self.cfg.seed, epoch=self.epoch,
                                  start_batch=self.batch_in_epoch, rank=self.dist.rank,
                                  world_size=self.dist.world_size)
        loader = build_train_loader(
            self.dataset.train, self.labels, self.cfg.data, seed=self.cfg.seed, epoch=self.epoch,
            start_batch=self.batch_in_epoch, rank=self.dist.rank, world_size=self.dist.world_size,
        )
        # the loader's own seed must not come from the global RNG: a resumed run creates it at another moment
        loader.generator = torch.Generator().manual_seed(self.cfg.seed * 100003 + self.epoch)
        return loader

    def _set_lr(self) -> float:
        progress = self.epoch + self.batch_in_epoch / max(self.steps_this_epoch, 1)
        factor = self.lr_factor(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * (1.0 if group.get("fixed_lr") else factor)
        return self.optimizer.param_groups[0]["lr"]

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimizer step; advances `step` and `batch_in_epoch` before the after_step hooks run."""
        self.model.train()
        for h in self.hooks:
            h.before_step(self, batch)
        with torch.autocast(self.device.type, enabled=self.amp):
            outputs = self.model(batch)
            losses = self.method.losses(outputs, batch)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        for h in self.hooks:
            h.after_backward(self)
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.batch_in_epoch += 1  # hooks see the counts including this step
        self.step += 1
        for h in self.hooks:
            h.after_step(self, batch, outputs, losses)
        return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}}

    def fit(self, resume: bool = False, run_notes: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train to the end (or to a stop signal) and evaluate; `run_notes` go into run_info.json."""
        cfg = self.cfg
        resumed_mid_epoch = self._resume() if resume else False  # first: a failed resume must change nothing
        if self.dist.is_main:
            ckpt.remove_stale_temporaries(self.output_dir / "checkpoints")
            write_run_info(self.output_dir, cfg, cfg.seed, {"world_size": self.dist.world_size,
                                                             "device": str(self.device), **(run_notes or {})})
            write_model_info(self.output_dir, self.method)  # every checkpoint is evaluable from the start
            self._announce()
        old_handlers = self._install_signal_handlers()
        try:
            for h in self.hooks:
                h.before_train(self)
            while self.epoch < cfg.schedule.epochs:
                self._run_epoch(skip_epoch_hooks=resumed_mid_epoch)
                resumed_mid_epoch = False
            for h in self.hooks:
                h.after_train(self)
            if self.dist.is_main:
                save_bundle(self.output_dir, self.method)
            results = self.evaluate() if self.dataset.query and self.dataset.gallery else {}
            return results
        except StopRequested:
            name = signal.Signals(self._stop).name if self._stop else "a signal"
            raise RunStopped(f"stopped by {name} at step {self.step} (checkpoint saved in "
                             f"{self.output_dir / 'checkpoints'}); continue with the same command and --resume",
                             signum=self._stop or signal.SIGTERM) from None
        finally:
            self._restore_signal_handlers(old_handlers)
            self.log.close()
            barrier(self.dist)

    def _run_epoch(self, skip_epoch_hooks: bool) -> None:
        cfg = self.cfg
        if not skip_epoch_hooks:
            for h in self.hooks:
                h.before_epoch(self)
        loader = self._train_loader()
        # the full epoch, also when resuming
        self.steps_this_epoch = getattr(loader, "batch_sampler", loader).batches_per_epoch
        if cfg.train.steps_per_epoch:
            self.steps_this_epoch = min(self.steps_this_epoch, cfg.train.steps_per_epoch)
        t0, seen = time.perf_counter(), 0
        for batch in loader:
            if self.batch_in_epoch >= self.steps_this_epoch:
                break
            lr = self._set_lr()
            batch = self._to_device(batch)
            values = self.train_step(batch)
            seen += batch["labels"].shape[0] * self.dist.world_size
            if self.step % max(cfg.train.log_every, 1) == 0 or self.batch_in_epoch == self.steps_this_epoch:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                self.log.log(self.step, {**values, "lr": lr, "epoch": self.epoch, "images_per_s": rate})
                if self.dist.is_main and cfg.train.progress:
                    console.print(
                        f"epoch {self.epoch + 1}/{cfg.schedule.epochs} step {self.batch_in_epoch}/"
                        f"{self.steps_this_epoch} loss {values['loss']:.4f} lr {lr:.2e} {rate:.1f} img/s"
                    )
            if cfg.train.checkpoint_every_steps and self.step % cfg.train.checkpoint_every_steps == 0:
                self.save_checkpoint()
            # every rank must stop after the same step: a signal may reach the ranks at different steps
            self._stop = max_over_ranks(self._stop or 0, self.dist) or None
            if self._stop:
                self.save_checkpoint()
                raise StopRequested
        for h in self.hooks:
            h.after_epoch(self)
        self.epoch += 1
        self.batch_in_epoch = 0
        if cfg.train.checkpoint_every_epochs and self.epoch % cfg.train.checkpoint_every_epochs == 0:
            self.save_checkpoint()
        if cfg.train.eval_every_epochs and self.epoch % cfg.train.eval_every_epochs == 0 \
                and self.epoch < cfg.schedule.epochs:
            self.evaluate()

    def _announce(self) -> None:
        """What is about to run, printed before the first (slow) step: data, model, plan."""
        cfg, train = self.cfg, self.dataset.train
        ids = len(set(self.labels) - {-1})
        cams = len({r.camera_id for r in train})
        steps = self._steps_per_epoch()
        backbone = getattr(getattr(cfg.model, "backbone", None), "name", None)
        console.print(
            f"train: {len(train)} images, {ids} ids, {cams} cameras; query {len(self.dataset.query)}, gallery "
            f"{len(self.dataset.gallery)}\nmodel: {cfg.model.name}{f' ({backbone})' if backbone else ''}, "
            f"{parameter_count(self.method) / 1e6:.2f} M parameters, {self.device}"
            f"{', AMP' if self.amp else ''}{f', {self.dist.world_size} processes' if self.dist.enabled else ''}\n"
            f"plan: {cfg.schedule.epochs} epochs x {steps} steps of {cfg.data.ids_per_batch} ids x "
            f"{cfg.data.images_per_id} images, from epoch {self.epoch + 1}; output {self.output_dir}",
            highlight=False, soft_wrap=True)

    def _steps_per_epoch(self) -> int:
        from vreid.data.sampler import IdentityBatchSampler

        if self.feature_table is not None:
            return FeatureBatches(self.feature_table, self._batch_size(), self.cfg.seed, self.epoch).batches_per_epoch
        sampler = IdentityBatchSampler(self.labels, self.cfg.data.ids_per_batch, self.cfg.data.images_per_id,
                                       seed=self.cfg.seed, epoch=self.epoch, rank=self.dist.rank,
                                       world_size=self.dist.world_size)
        steps = sampler.batches_per_epoch
        return min(steps, self.cfg.train.steps_per_epoch) if self.cfg.train.steps_per_epoch else steps

    # ----- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
            "steps_this_epoch": self.steps_this_epoch, "labels": self.labels,
            "labels_version": self.labels_version,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "hooks": hook_states(self.hooks),
            "rng": ckpt.rng_state(),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            ckpt.save_training_checkpoint(self.output_dir / "checkpoints", self.step, self.method, self.state())
        barrier(self.dist)

    def _resume(self) -> bool:
        folder, state, skipped = ckpt.load_latest_intact(self.output_dir / "checkpoints", self.method)
        for reason in skipped if self.dist.is_main else ():
            console.print(f"[yellow]skipped a damaged checkpoint[/yellow] {reason}", highlight=False)
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.scaler.load_state_dict(state["scaler"])
        load_hook_states(self.hooks, state["hooks"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.steps_this_epoch = state["steps_this_epoch"]
        self.labels, self.labels_version = list(state["labels"]), state["labels_version"]
        ckpt.set_rng_state(state["rng"])
        if self.dist.is_main:
            self.log.truncate_after(self.step)
            console.print(f"resumed from {folder} (epoch {self.epoch + 1}, batch {self.batch_in_epoch})")
        return self.batch_in_epoch > 0

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self._stop = signum

        try:
            return {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread
            return {}

    @staticmethod
    def _restore_signal_handlers(old) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    # ----- evaluation --------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Embed query and gallery (each process its share), evaluate under the dataset's protocol, log and save."""
        from vreid.engine.evaluate import evaluate_and_save, evaluate_method

        if self.features is not None:  # a features method re-ranks the source's own query and gallery features
            import dataclasses

            qf, _ = self.features.split("query")
            gf, _ = self.features.split("gallery")
            cfg = dataclasses.replace(self.cfg, eval=dataclasses.replace(
                self.cfg.eval, rerank_options={**self.cfg.eval.rerank_options, "model": self.method}))
            results = evaluate_and_save(qf.to(self.device), gf.to(self.device), self.dataset, cfg,
                                        self.output_dir if self.dist.is_main else None, rerank=self.method.rerank)
        else:
            results = evaluate_method(self.method, self.dataset, self.cfg, self.device, self.output_dir,
                                      amp=self.amp)
        if self.dist.is_main:
            self.log.log(self.step, {k: v for k, v in results.items() if isinstance(v, float)})
        barrier(self.dist)
        self.last_eval = results
        return results

    def close(self) -> None:
        cleanup(self.dist)
