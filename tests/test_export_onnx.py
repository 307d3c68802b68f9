"""`vreid export onnx` and the torch / onnx embedders: parity, refusal, metadata, ranking, dynamic batch, errors.

Nothing is trained: tiny methods (resnet_tiny_ibn_a, 32 px) with perturbed weights are saved as run folders.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from vreid.config import load_experiment  # noqa: E402
from vreid.engine.bundle import save_bundle  # noqa: E402
from vreid.engine.run_info import write_run_info  # noqa: E402
from vreid.export.errors import ExportError, ParityError  # noqa: E402
from vreid.export.metadata import FORMAT, ExportMetadata  # noqa: E402
from vreid.export.to_onnx import export_onnx  # noqa: E402
from vreid.gallery.embedders import EmbedderError, OnnxEmbedder, TorchEmbedder, load_embedder  # noqa: E402
from vreid.methods import DataInfo, build_method  # noqa: E402

MBR_4G = str(Path(__file__).parent.parent / "configs" / "mbr" / "archs" / "mbr-4g.yaml")
METHODS = {
    "bot": (None, ["model.name=bot"]),
    "mbr": (MBR_4G, []),
    "mbr_camera_viewpoint": (MBR_4G, ["model.metadata=camera+viewpoint"]),
}


def make_run(folder: Path, data_root: Path | str, config: str | None, extra: list[str], flip: bool = False) -> Path:
    """A run folder (model.safetensors, model_info.json, config.yaml) of an untrained tiny method whose weights
    and BN statistics are perturbed, so every layer (and every metadata row) changes the embedding."""
    cfg = load_experiment(config, ["model.backbone.name=resnet_tiny_ibn_a", "data.height=32", "data.width=32",
                                   f"data.root={data_root}", f"output_dir={folder}", "data.workers=0",
                                   f"eval.flip={str(flip).lower()}", *extra])
    torch.manual_seed(0)
    method = build_method(cfg.model, DataInfo(num_classes=8, num_cameras=3, num_viewpoints=8, height=32, width=32))
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in method.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_bundle(folder, method.eval())
    write_run_info(folder, cfg, cfg.seed)
    return folder


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    base = tmp_path_factory.mktemp("export_runs")
    return {name: make_run(base / name, tiny_world, config, extra) for name, (config, extra) in METHODS.items()}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    return {name: (export_onnx(run, out / f"{name}.onnx", log=lambda line: None), out / f"{name}.onnx")
            for name, run in runs.items()}


def world_images(root: Path, n: int = 12):
    from vreid.data.images import open_rgb
    from vreid.export.parity import find_images

    return [open_rgb(p) for p in find_images(root, n)]


@pytest.mark.parametrize("name", list(METHODS))
def test_export_matches_pytorch_within_the_tolerance(name, exported, tiny_world, one_thread):
    report, path = exported[name]
    assert path.is_file() and report.max_abs_diff <= 1e-4 and report.min_cosine > 0.9999
    assert report.images.startswith("16 images from data.root") and str(tiny_world) in report.images
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
    assert report.inputs == (("images", "camera_ids", "viewpoints") if name == "mbr_camera_viewpoint"
                             else ("images",))


def test_metadata_declares_the_preprocessing_and_reads_back(exported, runs):
    import onnx

    _, path = exported["mbr_camera_viewpoint"]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["vreid_format"] == FORMAT and props["channel_order"] == "RGB"
    assert (props["input_height"], props["input_width"]) == ("32", "32")
    assert props["mean"] == "[0.485, 0.456, 0.406]" and props["std"] == "[0.229, 0.224, 0.225]"
    assert "outside the graph" in props["normalization"] and props["value_range"].startswith("0-1")
    assert props["metric"] == "euclidean" and props["method"] == "mbr" and props["embedding_dim"] == "256"
    assert props["source_run"] == str(runs["mbr_camera_viewpoint"].resolve())
    assert float(props["parity_max_abs_diff"]) <= 1e-4 and props["parity_l2_normalized"] == "false"
    meta = ExportMetadata.from_props(props, str(path))
    assert ExportMetadata.from_props(meta.to_props(), "x.onnx") == meta
    assert meta.inputs == ("images", "camera_ids", "viewpoints") and meta.preprocessing.height == 32
    bot_props = {p.key: p.value for p in onnx.load(str(exported["bot"][1])).metadata_props}
    assert bot_props["parity_l2_normalized"] == "true"  # bot ranks L2-normalised features


def test_a_layer_that_exports_differently_is_refused_and_leaves_no_file(runs, tmp_path, monkeypatch, one_thread):
    """A layer whose ONNX symbolic is not its PyTorch code (the FastReID failure class): the check catches it."""
    import vreid.engine.bundle as bundle

    class ExportsDifferently(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def symbolic(g, x):
            return g.op("Add", x, g.op("Constant", value_t=torch.tensor(1.0)))

    class Drift(torch.nn.Module):
        def forward(self, x):
            return ExportsDifferently.apply(x)

    real_load = bundle.load_bundle

    def tampered(path):
        method = real_load(path)
        method.pool = torch.nn.Sequential(method.pool, Drift())
        return method

    monkeypatch.setattr(bundle, "load_bundle", tampered)
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(ParityError, match="above --tolerance"):
        export_onnx(runs["bot"], out, log=lambda line: None)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # a looser tolerance lets the same graph through: the check, not the exporter, refused it
    report = export_onnx(runs["bot"], out, tolerance=10.0, log=lambda line: None)
    assert 1e-4 < report.max_abs_diff <= 10.0 and out.is_file()


@pytest.mark.parametrize("name", ["bot", "mbr_camera_viewpoint"])
def test_dynamic_batch_runs_batch_1_and_5(name, exported, runs, tiny_world, one_thread):
    _, path = exported[name]
    torch_embedder = TorchEmbedder.from_run(runs[name])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = world_images(tiny_world, 5)
    for n in (1, 5):
        x = torch_embedder.prepare(images[:n])
        cams, views = torch.arange(n) % 4 - 1, torch.arange(n) % 9 - 1
        feed = {"images": x.numpy()}
        if name != "bot":
            feed.update(camera_ids=cams.numpy(), viewpoints=views.numpy())
        (out,) = session.run(None, feed)
        ref = torch_embedder.method.embed(x, cams, views).numpy()
        assert out.shape == (n, 256) and np.abs(out - ref).max() <= 1e-4


@pytest.mark.parametrize("flip", [False, True])
def test_embedders_rank_as_vreid_eval(flip, tiny_world, tmp_path, one_thread):
    """Torch embedder == the eval extraction path; onnx embedder == torch embedder (values and ranking)."""
    from vreid.config.schema import DataConfig
    from vreid.data import load_dataset
    from vreid.data.images import open_rgb
    from vreid.engine.bundle import load_bundle
    from vreid.engine.extract import extract_features

    run = make_run(tmp_path / "run", tiny_world, MBR_4G, ["model.metadata=camera"], flip=flip)
    export_onnx(run, tmp_path / "m.onnx", log=lambda line: None)
    dataset = load_dataset(DataConfig(layout="veri776", root=str(tiny_world), height=32, width=32, workers=0))
    records = dataset.query + dataset.gallery
    images = [open_rgb(r.path) for r in records]
    cams = [r.camera_id for r in records]
    views = [r.viewpoint if r.viewpoint is not None else -1 for r in records]
    eval_feats = extract_features(load_bundle(run), records, DataConfig(height=32, width=32, workers=0),
                                  flip=flip).numpy()
    by_torch = load_embedder(run, batch_size=7)
    by_onnx = load_embedder(tmp_path / "m.onnx", batch_size=7)
    assert isinstance(by_torch, TorchEmbedder) and isinstance(by_onnx, OnnxEmbedder)
    assert by_torch.flip == by_onnx.flip == flip and by_torch.dim == by_onnx.dim == 256
    assert by_torch.metric == by_onnx.metric == "euclidean"
    assert by_torch.model["preprocessing"] == by_onnx.model["preprocessing"]
    assert by_torch.model["run"] == by_onnx.model["run"]
    t, o = by_torch.embed(images, cams, views), by_onnx.embed(images, cams, views)
    assert t.dtype == o.dtype == np.float32 and t.shape == (len(records), 256)
    assert np.abs(t - eval_feats).max() <= 1e-5
    assert np.abs(o - t).max() <= 1e-4
    nq = len(dataset.query)

    def distances(f):
        return ((f[:nq, None, :] - f[None, nq:, :]) ** 2).sum(-1)

    d_eval, d_onnx = distances(eval_feats), distances(o)
    order = np.argsort(d_eval, axis=1, kind="stable")
    # eval's order is a sorted order of the onnx distances too (up to ties closer than float noise)
    ranked = np.take_along_axis(d_onnx, order, axis=1)
    assert (np.diff(ranked, axis=1) >= -1e-5).all()
    assert (np.argsort(d_onnx, axis=1, kind="stable")[:, 0] == order[:, 0]).mean() > 0.9


def test_the_onnx_embedder_needs_no_torch(exported, tiny_world):
    _, path = exported["bot"]
    image = next(p for p in Path(tiny_world).rglob("*.jpg"))
    code = ("import sys\nfrom PIL import Image\nfrom vreid.gallery.embedders import load_embedder\n"
            f"e = load_embedder({str(path)!r})\n"
            f"f = e.embed([Image.open({str(image)!r}).convert('RGB')] * 3)\n"
            "assert f.shape == (3, 256), f.shape\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_cli_exports_and_says_what_it_checked(runs, tmp_path):
    from vreid.cli.main import app

    out = tmp_path / "bot.onnx"
    result = CliRunner().invoke(app, ["export", "onnx", str(runs["bot"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity on 16 images" in result.output and "max abs difference" in result.output
    assert f"wrote {out}" in result.output and out.is_file()
    again = CliRunner().invoke(app, ["export", "onnx", str(runs["bot"]), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize("args, expect", [
    (lambda tmp, run: [str(tmp / "no_such_run"), "-o", str(tmp / "m.onnx")], ("no_such_run", "no such run folder")),
    (lambda tmp, run: [str(run), "-o", str(tmp / "m.txt")], ("m.txt", "must end in .onnx")),
    (lambda tmp, run: [str(run), "-o", str(tmp / "m.onnx"), "--images", str(tmp / "empty")],
     ("--images", "no .jpg")),
], ids=["missing_run", "wrong_suffix", "empty_images_folder"])
def test_cli_errors_are_one_line_and_write_nothing(args, expect, runs, tmp_path):
    from vreid.cli.main import app

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["export", "onnx", *args(tmp_path, runs["bot"])])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert all(text in errors[0] for text in expect), errors[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_images_option_and_synthetic_fallback(tmp_path, tiny_world, one_thread):
    run = make_run(tmp_path / "run", "/nonexistent/data", None, ["model.name=bot"])
    report = export_onnx(run, tmp_path / "a.onnx", log=lambda line: None)
    assert "synthetic world" in report.images and "not a readable folder" in report.images
    report = export_onnx(run, tmp_path / "b.onnx", images=str(tiny_world / "image_query"), log=lambda line: None)
    assert report.images == f"16 images from --images {tiny_world / 'image_query'}"


def test_load_embedder_refuses_what_it_cannot_read(tmp_path):
    foreign = tmp_path / "foreign.onnx"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["embedding"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ExportError, match="not a vreid embedding export"):
        load_embedder(foreign)
    with pytest.raises(EmbedderError, match="no such file"):
        load_embedder(tmp_path / "missing.onnx")
    with pytest.raises(EmbedderError, match="no such run folder"):
        load_embedder(tmp_path / "missing_run", backend="torch")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EmbedderError, match="neither a run folder nor a .onnx file"):
        load_embedder(tmp_path / "notes.txt")


def test_a_layer_the_exporter_cannot_write_is_one_error_line(runs, tmp_path, monkeypatch, capfd):
    """No IR dump on the terminal (the exporter prints its whole graph on failure), no file."""
    import vreid.engine.bundle as bundle
    from vreid.cli.main import app

    class NoOnnxForm(torch.nn.Module):
        def forward(self, x):
            return x + 0 * torch.special.bessel_j0(x)

    real_load = bundle.load_bundle

    def with_unsupported_layer(path):
        method = real_load(path)
        method.pool = torch.nn.Sequential(method.pool, NoOnnxForm())
        return method

    monkeypatch.setattr(bundle, "load_bundle", with_unsupported_layer)
    result = CliRunner().invoke(app, ["export", "onnx", str(runs["bot"]), "-o", str(tmp_path / "m.onnx")])
    captured = capfd.readouterr()
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "cannot be written as ONNX opset 17" in errors[0] and "bessel_j0" in errors[0]
    assert "Torch IR graph" not in captured.out + captured.err + result.output
    assert list(tmp_path.iterdir()) == []
