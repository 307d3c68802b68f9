"""The learned contextual re-ranker (vreid.rerank.contextual, method rerank_net): the expansion, chunking, loading
a trained run, and training on features (with exact resume)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import CrashAt, train_run
from vreid.config import load_experiment
from vreid.config.catalog import PACKAGED_CONFIGS
from vreid.engine.run import load_data
from vreid.eval.distance import FeatureDistances
from vreid.methods import DataInfo, build_method
from vreid.models.contextual import ContextualNetConfig, ContextualRerankNet
from vreid.rerank import RERANKERS
from vreid.rerank.contextual import ContextualDistances, load_contextual_net, nearest_neighbours, refine

pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 16


def clustered(ids: int, per_id: int, dim: int = DIM, spread: float = 0.05, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised features, labels): `per_id` noisy copies of one random centre per identity."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, dim, generator=g), dim=1)
    labels = torch.arange(ids).repeat_interleave(per_id)
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def tiny_net(k: int, seed: int = 0) -> ContextualRerankNet:
    torch.manual_seed(seed)
    return ContextualRerankNet(ContextualNetConfig(in_dim=DIM, k=k, dim=16, heads=2, slots=2)).eval()


def test_a_perfect_correlation_predictor_collapses_each_identity_to_its_centre():
    x, labels = clustered(ids=4, per_id=5)
    _, idx = nearest_neighbours(x, x, k=4, offset=0)      # each row: the other 4 of its identity
    assert (labels[idx] == labels[:, None]).all()
    perfect = lambda tokens: (labels[idx] == labels[:, None]).float()   # noqa: E731 (one chunk: rows known)
    refined = refine(x, x, idx, perfect, chunk_size=len(x))
    for i in range(4):
        centre = torch.nn.functional.normalize(x[labels == i].sum(0), dim=0)
        assert torch.allclose(refined[labels == i], centre.expand(5, -1), atol=1e-6)


def test_zero_weights_give_plain_retrieval():
    x, _ = clustered(ids=3, per_id=3)
    _, idx = nearest_neighbours(x, x, k=2, offset=0)
    assert torch.allclose(refine(x, x, idx, lambda t: torch.zeros(t.shape[0], t.shape[1] - 1)), x, atol=1e-6)


def test_neighbour_lists_leave_the_row_itself_out_and_keep_rank_order():
    x, _ = clustered(ids=3, per_id=4)
    sim, idx = nearest_neighbours(x, x, k=3, offset=0)
    assert not (idx == torch.arange(len(x))[:, None]).any()
    assert (sim[:, :-1] >= sim[:, 1:]).all()


@pytest.mark.parametrize("search", ["gallery", "all"])
def test_the_reranker_in_chunks_equals_the_unchunked_result(search):
    gf, _ = clustered(ids=6, per_id=4, seed=1)
    qf, _ = clustered(ids=6, per_id=1, seed=2)
    net = tiny_net(k=5)
    whole = ContextualDistances(qf, gf, model=net, k=5, search=search, chunk_size=10_000)
    chunked = ContextualDistances(qf, gf, model=net, k=5, search=search, chunk_size=3)
    assert torch.allclose(whole.block(0, len(qf)), chunked.block(0, len(qf)), atol=1e-6)
    assert torch.allclose(chunked.block(0, 2), whole.block(0, len(qf))[:2], atol=1e-6)


def test_lambda_mixes_in_the_original_distance():
    gf, _ = clustered(ids=4, per_id=3, seed=1)
    qf, _ = clustered(ids=4, per_id=1, seed=2)
    net = tiny_net(k=3)
    refined = ContextualDistances(qf, gf, model=net, k=3).block(0, 4)
    original = FeatureDistances(qf, gf, "euclidean").block(0, 4)   # the evaluator's own distance
    mixed = ContextualDistances(qf, gf, model=net, k=3, lambda_value=0.25).block(0, 4)
    assert torch.allclose(mixed, 0.75 * refined + 0.25 * original, atol=1e-5)


def test_forward_and_backward_on_cpu():
    method = build_method(load_experiment(PACKAGED_CONFIGS / "rerank_net" / "synthetic.yaml",
                                          ["model.dim=16", "model.heads=2", "model.k=4"]).model,
                          DataInfo(num_classes=3, feature_dim=DIM)).train()
    x, labels = clustered(ids=3, per_id=5)
    _, idx = nearest_neighbours(x, x, k=4, offset=0)
    from vreid.data.features import neighbourhood_batch

    batch = neighbourhood_batch(x, labels, idx, torch.arange(len(x)))
    losses = method.losses(method(batch), batch)
    assert set(losses) == {"bce"} and torch.isfinite(losses["bce"])
    losses["bce"].backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    method.eval()
    refined = method.embed(batch["features"])
    assert refined.shape == (len(x), DIM) and torch.allclose(refined.norm(dim=1), torch.ones(len(x)))


# ----- training on features --------------------------------------------------------------------------------------
def write_features(dataset, path: Path) -> Path:
    """A `vreid extract`-style .npz of the dataset's records: one noisy centre per vehicle id."""
    rng = np.random.default_rng(0)
    centres: dict[int, np.ndarray] = {}
    arrays = {}
    for split in ("train", "query", "gallery"):
        records = getattr(dataset, split)
        ids = np.array([r.vehicle_id for r in records])
        rows = [centres.setdefault(int(i), rng.normal(size=DIM)) + 0.6 * rng.normal(size=DIM) for i in ids]
        arrays[f"{split}_features"] = np.array(rows, dtype=np.float32)
        arrays[f"{split}_vehicle_ids"] = ids
        arrays[f"{split}_camera_ids"] = np.array([r.camera_id for r in records])
    np.savez(path, **arrays)
    return path


def features_config(root, features, out, **extra):
    base = {"data.root": root, "data.height": 32, "data.width": 32, "data.ids_per_batch": 2,
            "data.images_per_id": 4, "model.features": features, "model.k": 4, "model.dim": 16,
            "model.heads": 2, "model.slots": 2, "optim.lr": 1e-3, "schedule.epochs": 2,
            "train.tensorboard": False, "train.progress": False, "train.checkpoint_every_epochs": 0,
            "train.device": "cpu", "output_dir": out, "seed": 7, **extra}
    return load_experiment(PACKAGED_CONFIGS / "rerank_net" / "synthetic.yaml", [f"{k}={v}" for k, v in base.items()])


train = train_run


@pytest.fixture(scope="module")
def feature_file(tiny_world, tmp_path_factory):
    cfg = load_experiment(None, [f"data.root={tiny_world}"])
    return write_features(load_data(cfg), tmp_path_factory.mktemp("features") / "feats.npz")


@pytest.fixture(scope="module")
def reference_features_run(tiny_world, feature_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("rerank_ref")
    results, trainer = train(features_config(tiny_world, feature_file, out))
    return out, results, trainer.steps_this_epoch


def test_training_on_features_writes_a_run_evaluated_with_the_contextual_reranker(reference_features_run):
    out, results, steps = reference_features_run
    assert steps >= 3
    for name in ("model.safetensors", "model_info.json", "metrics.csv", "results.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert results["rerank"] == "contextual" and 0.0 <= results["mAP"] <= 1.0
    assert json.loads((out / "model_info.json").read_text())["data"]["feature_dim"] == DIM


def test_resume_after_kill_on_features_gives_identical_weights(one_thread, tiny_world, feature_file, tmp_path):
    # its own reference, in the same thread setting: multi-threaded CPU kernels need not add up in one order
    ref_out = tmp_path / "reference"
    _, trainer = train(features_config(tiny_world, feature_file, ref_out))
    steps = trainer.steps_this_epoch
    cfg = features_config(tiny_world, feature_file, tmp_path / "run", **{"train.checkpoint_every_steps": 2})
    crash = steps + 2 if (steps + 2) % 2 else steps + 3     # mid second epoch, one step after a checkpoint
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg, hooks=[CrashAt(crash)])
    last = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert last["step"] == crash - 1 and last["step"] % steps != 0
    train(cfg, resume=True)
    ref, got = load_file(str(ref_out / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_trained_run_loads_as_the_registered_reranker(reference_features_run, feature_file):
    out, results, _ = reference_features_run
    net, saved = load_contextual_net(out)
    assert saved["k"] == 4 and net.cfg.in_dim == DIM and not net.training
    with np.load(feature_file) as f:
        qf, gf = f["query_features"], f["gallery_features"]
    from_run = RERANKERS.get("contextual")(qf, gf, model=str(out))
    assert from_run.block(0, len(qf)).shape == (len(qf), len(gf))


def test_training_on_a_run_folder_embeds_its_splits(finished_run, tiny_world, tmp_path):
    run, _ = finished_run
    results, trainer = train(features_config(tiny_world, run, tmp_path, **{"schedule.epochs": 1}))
    assert results["rerank"] == "contextual" and trainer.feature_table.features.shape[1] > 0


def test_a_features_method_without_features_is_a_config_error(tiny_world, tmp_path):
    from vreid.config.loader import ConfigError

    with pytest.raises(ConfigError, match="model.features"):
        train(features_config(tiny_world, '""', tmp_path))
