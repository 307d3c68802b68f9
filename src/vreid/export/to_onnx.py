"""`export_onnx`: a run's embedding model (what `method.embed` computes) as an ONNX graph, checked before it lands.

The graph takes the normalised image tensor (normalisation stays outside, declared in the metadata) with a
dynamic batch axis, plus int64 `camera_ids` / `viewpoints` inputs for methods that read them (their
`required_metadata()`). The file is written under a temporary name, its metadata read back by the ONNX embedder,
both backends embed the same real images, and only a file within the tolerance is renamed into place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from vreid.export.errors import ExportError, ParityError
from vreid.export.metadata import ExportMetadata, metadata_for_run
from vreid.export.parity import compare, parity_images
from vreid.fileio import atomic_path

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
#: Images the parity check embeds, and its batch size: not the traced batch (2), and a smaller last batch.
PARITY_IMAGES = 16
PARITY_BATCH = 6


@dataclass(frozen=True)
class ExportReport:
    path: str
    inputs: tuple[str, ...]
    embedding_dim: int
    max_abs_diff: float
    min_cosine: float
    images: str
    tolerance: float
    seconds: float


class EmbeddingGraph(nn.Module):
    """`method.embed(images, camera_ids, viewpoints)` with the metadata inputs as positional tensors."""

    def __init__(self, method: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.method = method
        self.labels = inputs[1:]

    def forward(self, images: torch.Tensor, *labels: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.labels, labels))
        return self.method.embed(images, named.get("camera_ids"), named.get("viewpoints"))


def _symbolic_iand(g: Any, a: Any, b: Any) -> Any:
    return g.op("And", a, b)


def _register_symbolics() -> None:
    # `known &= ...` (mbr's metadata index) traces to aten::__iand_, which the TorchScript exporter lacks; the
    # tracer already rebinds the in-place result, so the plain And is exact (the parity check confirms it).
    torch.onnx.register_custom_op_symbolic("aten::__iand_", _symbolic_iand, 9)


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The TorchScript exporter dumps its whole IR graph to the terminal when a layer fails (it enables its own
    log whatever `verbose` says); the error message is enough, so both streams go to /dev/null meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's eval fast path (`_native_multi_head_attention`) has no ONNX form; its plain path
    computes the same."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:  # pragma: no cover - older torch
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def trace_to_onnx(graph: EmbeddingGraph, example: tuple[torch.Tensor, ...], path: Path, inputs: tuple[str, ...],
                  opset: int) -> None:
    """Write `graph` to `path` with a dynamic batch axis on every input and on `embedding`."""
    _register_symbolics()
    graph.eval()
    try:
        with warnings.catch_warnings(), _exporter_quiet(), _mha_fastpath_off():
            warnings.simplefilter("ignore")  # tracer and deprecation notes; the parity check is the verdict
            torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                              output_names=["embedding"], do_constant_folding=True,
                              dynamic_axes={name: {0: "batch"} for name in (*inputs, "embedding")})
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ExportError(f"the model cannot be written as ONNX opset {opset} ({first[:300]}); try another "
                          "--opset (18, 20), or report the layer that fails") from None
    finally:
        graph.eval()  # export puts the module back in the mode it found it in; keep eval for the check


def write_metadata(path: Path, meta: ExportMetadata, run: str) -> None:
    """Set the file's metadata_props (replacing any), producer and doc string; check the model."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2:  # the exporter leaves the width symbolic after a Concat; it is fixed
        dims[1].Clear()
        dims[1].dim_value = meta.embedding_dim
    model.producer_name, model.producer_version = "vreid", meta.vreid_version
    model.doc_string = (f"vreid {meta.method} embedding model of {run}: inputs {', '.join(meta.inputs)}; "
                        "normalise outside the graph (see the metadata keys mean, std, normalization)")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(run: str | Path, output: str | Path, images: str | None = None,
                tolerance: float = DEFAULT_TOLERANCE, opset: int = DEFAULT_OPSET, overwrite: bool = False,
                parity_count: int = PARITY_IMAGES, log: Callable[[str], None] = print) -> ExportReport:
    """Export the run's embedding model to `output` (.onnx) if PyTorch and onnxruntime agree within `tolerance`.

    Parity images: `images` (a folder) if given, else the run's data.root, else a small synthetic world.
    Raises ParityError (and leaves no file) when the max absolute difference exceeds `tolerance`.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ExportError(f"{e.name} is not installed; install the export extra: pip install 'vreid[export]'") \
            from None
    from vreid.engine.bundle import load_bundle
    from vreid.engine.run import run_folder_of
    from vreid.engine.run_folder import saved_config
    from vreid.gallery.embedders import OnnxEmbedder, TorchEmbedder, probe_embedding_dim

    start = time.perf_counter()
    run, output = Path(run), Path(output)
    if not run.exists():
        raise ExportError(f"{run}: no such run folder; pass the output folder of a `vreid train` run (it holds "
                          "model.safetensors + model_info.json)")
    if output.suffix != ".onnx":
        raise ExportError(f"-o {output}: the file name must end in .onnx (load_embedder picks the backend by it)")
    if output.exists() and not overwrite:
        raise ExportError(f"-o {output}: exists already; pass --overwrite to replace it, or choose another name")
    if not tolerance > 0:
        raise ExportError(f"--tolerance {tolerance}: must be > 0 (the largest absolute difference accepted)")
    method = load_bundle(run).cpu().eval()
    run_dir = run_folder_of(run).resolve()
    meta = metadata_for_run(method, str(run_dir), probe_embedding_dim(method))
    data = (saved_config(run_dir) or {}).get("data") or {}
    check = parity_images(data.get("root") if isinstance(data, dict) else None, images, parity_count,
                          max(meta.preprocessing.height, meta.preprocessing.width),
                          meta.num_cameras, meta.num_viewpoints)
    torch_embedder = TorchEmbedder(method, meta, flip=False, batch_size=PARITY_BATCH)
    example = (torch_embedder.prepare(check.images[:2]),
               *[torch.from_numpy(ids[:2]) for name, ids in (("camera_ids", check.cameras),
                                                             ("viewpoints", check.viewpoints))
                 if name in meta.inputs])
    with atomic_path(output) as tmp:
        trace_to_onnx(EmbeddingGraph(method, meta.inputs), example, tmp, meta.inputs, opset)
        write_metadata(tmp, meta, str(run_dir))
        reference = torch_embedder.embed(check.images, check.cameras, check.viewpoints)
        exported = OnnxEmbedder(tmp, flip=False, batch_size=PARITY_BATCH, threads=torch.get_num_threads())
        candidate = exported.embed(check.images, check.cameras, check.viewpoints)
        max_abs, min_cos = compare(reference, candidate)
        log(f"parity on {check.source}: max abs difference {max_abs:.3g}, min cosine {min_cos:.8f} "
            f"(tolerance {tolerance:g})")
        if not max_abs <= tolerance:
            raise ParityError(f"-o {output}: the ONNX graph differs from the PyTorch model by up to {max_abs:.3g} "
                              f"(min cosine {min_cos:.6f}) on {check.source}, above --tolerance {tolerance:g}; "
                              "no file was written. A layer exports differently from its PyTorch code: try "
                              "another --opset, or pass a larger --tolerance if the difference is acceptable")
        norms = [float(v) for v in (reference.astype("float64") ** 2).sum(axis=1) ** 0.5]
        parity = {"max_abs_diff": f"{max_abs:.6g}", "min_cosine": f"{min_cos:.9f}", "images": check.source,
                  "tolerance": f"{tolerance:g}",
                  "l2_normalized": "true" if norms and all(abs(n - 1) < 1e-3 for n in norms) else "false"}
        meta = dataclasses.replace(meta, parity=parity)
        write_metadata(tmp, meta, str(run_dir))
    return ExportReport(path=str(output), inputs=meta.inputs, embedding_dim=meta.embedding_dim,
                        max_abs_diff=max_abs, min_cosine=min_cos, images=check.source, tolerance=tolerance,
                        seconds=time.perf_counter() - start)
