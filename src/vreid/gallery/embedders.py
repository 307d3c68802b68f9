"""The two embedders: `torch` (a run folder, eager PyTorch) and `onnx` (a file of `vreid export onnx`, onnxruntime).

Both preprocess as `vreid eval` does (bilinear resize to the model's size, RGB, /255, the model's mean/std), pass
camera and viewpoint ids where the model reads them (-1 = unknown, as eval passes an unknown label), and average
with the flipped image when the run's `eval.flip` is on, so they rank as `vreid eval` ranks that model. The
onnx embedder needs only PIL, numpy and onnxruntime (torch only for images that are not 8-bit RGB).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from vreid.errors import VreidError
from vreid.gallery.base import EMBEDDERS, Embedder

if TYPE_CHECKING:
    from vreid.export.metadata import ExportMetadata

# vreid.export (file format, preprocessing) is imported inside the functions: its exporter checks parity with
# these embedders, so neither package imports the other at module level (tests/test_import_layers.py).


class EmbedderError(VreidError):
    """An embedder that cannot be loaded or fed: a missing file, a missing package, labels of the wrong length."""


def _labels(values: Sequence[int] | None, n: int, name: str) -> np.ndarray:
    """(n,) int64 camera or viewpoint ids; None = all unknown (-1)."""
    if values is None:
        return np.full(n, -1, dtype=np.int64)
    out = np.asarray(values, dtype=np.int64).reshape(-1)
    if len(out) != n:
        raise EmbedderError(f"{name}: {len(out)} values for {n} images; give one per image (-1 = unknown) or none")
    return out


class _BatchedEmbedder:
    """Batching, label checks and the flip average; a backend provides `prepare` (images -> its input batch)
    and `_forward` (input batch -> embeddings)."""

    backend = ""
    dim: int
    metric: str
    model: dict[str, Any]

    def __init__(self, meta: ExportMetadata, source: str, batch_size: int, flip: bool | None) -> None:
        if batch_size < 1:
            raise EmbedderError(f"batch_size={batch_size}: use 1 or more")
        self.meta = meta
        self.dim = meta.embedding_dim
        self.metric = meta.metric
        self.flip = meta.flip if flip is None else bool(flip)
        self.batch_size = batch_size
        self.model = {**meta.model_info(), "flip": self.flip, "backend": self.backend, "source": source}

    def prepare(self, images: Sequence[Image.Image]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward(self, x: Any, cameras: np.ndarray, viewpoints: np.ndarray, flipped: bool) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - abstract

    def embed(self, images: Sequence[Image.Image], cameras: Sequence[int] | None = None,
              viewpoints: Sequence[int] | None = None) -> np.ndarray:
        """(N, dim) float32 embeddings of PIL images, in order."""
        images = list(images)
        n = len(images)
        cams, views = _labels(cameras, n, "cameras"), _labels(viewpoints, n, "viewpoints")
        out = np.zeros((n, self.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            end = min(start + self.batch_size, n)
            x = self.prepare(images[start:end])
            f = self._forward(x, cams[start:end], views[start:end], flipped=False)
            if self.flip:  # as vreid.engine.extract.extract_features: the mean with the mirrored image
                f = (f + self._forward(x, cams[start:end], views[start:end], flipped=True)) / 2
            out[start:end] = f
        return out


class TorchEmbedder(_BatchedEmbedder):
    """A trained method in eager PyTorch with the run's test transform (`build_test_transform`)."""

    backend = "torch"

    def __init__(self, method: Any, meta: ExportMetadata, source: str = "", device: str = "cpu",
                 batch_size: int = 64, flip: bool | None = None) -> None:
        from vreid.config.schema import DataConfig
        from vreid.data.transforms import build_test_transform

        super().__init__(meta, source or meta.source_run, batch_size, flip)
        p = meta.preprocessing
        self.transform = build_test_transform(DataConfig(height=p.height, width=p.width, mean=list(p.mean),
                                                         std=list(p.std)))
        self.device = device
        self.method = method.to(device).eval()
        self.model["device"] = str(device)

    @classmethod
    def from_run(cls, path: str | Path, device: str = "cpu", batch_size: int = 64,
                 flip: bool | None = None) -> "TorchEmbedder":
        """Load a run folder (or a checkpoint folder / model.safetensors of one) with `load_bundle`."""
        from vreid.engine.bundle import load_bundle
        from vreid.engine.run import run_folder_of
        from vreid.export.metadata import metadata_for_run

        path = Path(path)
        if not path.exists():
            raise EmbedderError(f"{path}: no such run folder; pass the output folder of a `vreid train` run "
                                "(it holds model.safetensors + model_info.json)")
        method = load_bundle(path)
        meta = metadata_for_run(method, str(run_folder_of(path).resolve()), probe_embedding_dim(method))
        return cls(method, meta, source=str(path), device=device, batch_size=batch_size, flip=flip)

    def prepare(self, images: Sequence[Image.Image]) -> Any:
        import torch

        from vreid.export.preprocessing import rgb

        return torch.stack([self.transform(rgb(im)) for im in images])

    def _forward(self, x: Any, cameras: np.ndarray, viewpoints: np.ndarray, flipped: bool) -> np.ndarray:
        import torch

        x = x.to(self.device)
        with torch.no_grad():
            f = self.method.embed(x.flip(3) if flipped else x, torch.from_numpy(cameras).to(self.device),
                                  torch.from_numpy(viewpoints).to(self.device))
        return f.float().cpu().numpy()


def probe_embedding_dim(method: Any) -> int:
    """The width of `method.embed` for one blank image of the model's size."""
    import torch

    info = method.info
    device = next(method.parameters()).device
    x = torch.zeros(1, 3, info.height, info.width, device=device)
    unknown = torch.full((1,), -1, dtype=torch.long, device=device)
    was_training = method.training
    method.eval()
    with torch.no_grad():
        dim = int(method.embed(x, unknown, unknown).shape[1])
    method.train(was_training)
    return dim


class OnnxEmbedder(_BatchedEmbedder):
    """An `vreid export onnx` file run by onnxruntime; its preprocessing is read back from the file's metadata."""

    backend = "onnx"

    def __init__(self, path: str | Path, batch_size: int = 64, flip: bool | None = None,
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        from vreid.export.metadata import ExportMetadata

        path = Path(path)
        session = open_session(path, providers, threads)
        meta = ExportMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))
        names = tuple(i.name for i in session.get_inputs())
        if names != meta.inputs:
            raise EmbedderError(f"{path}: the graph's inputs {','.join(names)} differ from its metadata's "
                                f"{','.join(meta.inputs)}; re-export the run with `vreid export onnx`")
        super().__init__(meta, str(path), batch_size, flip)
        self.session = session
        self.output = session.get_outputs()[0].name
        self.model["providers"] = list(session.get_providers())

    def prepare(self, images: Sequence[Image.Image]) -> np.ndarray:
        from vreid.export.preprocessing import prepare_images

        return prepare_images(images, self.meta.preprocessing)

    def _forward(self, x: np.ndarray, cameras: np.ndarray, viewpoints: np.ndarray, flipped: bool) -> np.ndarray:
        feed: dict[str, np.ndarray] = {"images": np.ascontiguousarray(x[..., ::-1]) if flipped else x}
        if "camera_ids" in self.meta.inputs:
            feed["camera_ids"] = cameras
        if "viewpoints" in self.meta.inputs:
            feed["viewpoints"] = viewpoints
        return np.asarray(self.session.run([self.output], feed)[0], dtype=np.float32)


def open_session(path: Path, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An onnxruntime session for `path` (CPU unless `providers` says otherwise)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EmbedderError("onnxruntime is not installed; install it with: pip install 'vreid[export]'") from None
    if not path.is_file():
        raise EmbedderError(f"{path}: no such file; export a run first: vreid export onnx RUN -o {path}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for a bad file
        raise EmbedderError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:200]}); pass a "
                            "file written by `vreid export onnx`") from None


EMBEDDERS.register("torch")(TorchEmbedder.from_run)
EMBEDDERS.register("onnx")(OnnxEmbedder)


def load_embedder(path: str | Path, backend: str = "auto", **options: Any) -> Embedder:
    """An embedder for `path`: "auto" picks onnx for a .onnx file and torch for a run folder (or its weights).

    `options` go to the backend: batch_size, flip (None = the run's eval.flip); torch: device; onnx: providers,
    threads.
    """
    path = Path(path)
    if backend == "auto":
        if path.suffix == ".onnx":
            backend = "onnx"
        elif path.is_dir() or path.suffix == ".safetensors":
            backend = "torch"
        elif not path.exists():
            raise EmbedderError(f"{path}: no such file or folder; pass a run folder (torch) or a .onnx file of "
                                "`vreid export onnx` (onnx)")
        else:
            raise EmbedderError(f"{path}: neither a run folder nor a .onnx file; pass one of them, or choose the "
                                f"backend ({', '.join(EMBEDDERS.names())})")
    return EMBEDDERS.get(backend)(str(path), **options)
