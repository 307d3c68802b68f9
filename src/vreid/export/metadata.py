"""What an exported .onnx file declares about itself (ONNX `metadata_props`, string -> string), and reading it back.

Normalisation is not in the graph: the file says how to make its input (resize, RGB, 0-1, mean/std), so a
server normalises once, and the same way vreid's test transform does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from vreid.export.errors import ExportError
from vreid.export.preprocessing import RESIZE, Preprocessing

#: Marks a file written by `vreid export onnx`; the number changes when the keys below change meaning.
FORMAT = "vreid-embedding/1"

#: The graph's metadata inputs, by the ImageRecord field (`MetadataNeed.field`) a method reads.
METADATA_INPUTS = {"camera_id": "camera_ids", "viewpoint": "viewpoints"}

NORMALIZATION_NOTE = ("outside the graph: feed (pixel / 255 - mean) / std per RGB channel, NCHW float32, "
                      "as vreid's test transform makes it; the graph does not normalise")
INPUT_NOTES = {
    "images": "float32 (N, 3, input_height, input_width), normalised (see normalization)",
    "camera_ids": "int64 (N,), the camera id of the image's dataset record (what vreid eval passes); -1 = unknown",
    "viewpoints": "int64 (N,), the viewpoint of the image's dataset record (what vreid eval passes); -1 = unknown",
}


@dataclass(frozen=True)
class ExportMetadata:
    """The declared preprocessing and provenance of one export."""

    preprocessing: Preprocessing
    metric: str
    embedding_dim: int
    inputs: tuple[str, ...] = ("images",)
    flip: bool = False
    method: str = ""
    source_run: str = ""
    vreid_version: str = ""
    num_cameras: int = 1
    num_viewpoints: int = 8
    #: filled in after the parity check: max_abs_diff, min_cosine, images, tolerance, l2_normalized
    parity: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        p = self.preprocessing
        props = {
            "vreid_format": FORMAT,
            "vreid_version": self.vreid_version,
            "source_run": self.source_run,
            "method": self.method,
            "inputs": ",".join(self.inputs),
            "input_notes": json.dumps({name: INPUT_NOTES[name] for name in self.inputs}),
            "input_height": str(p.height),
            "input_width": str(p.width),
            "resize": f"{RESIZE} (PIL Image.BILINEAR) to input_width x input_height; the aspect ratio is not kept",
            "channel_order": "RGB",
            "value_range": "0-1 (pixel / 255) before normalisation",
            "mean": json.dumps(list(p.mean)),
            "std": json.dumps(list(p.std)),
            "normalization": NORMALIZATION_NOTE,
            "metric": self.metric,
            "flip": "true" if self.flip else "false",
            "embedding_dim": str(self.embedding_dim),
            "num_cameras": str(self.num_cameras),
            "num_viewpoints": str(self.num_viewpoints),
        }
        props.update({f"parity_{k}": v for k, v in self.parity.items()})
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], file: str) -> "ExportMetadata":
        """Read back `to_props`; a file without vreid's keys is refused with the command that makes one."""
        if props.get("vreid_format") != FORMAT:
            found = props.get("vreid_format")
            what = f"its vreid_format is {found!r}, this vreid reads {FORMAT!r}" if found else \
                "it has no vreid_format in its metadata (not written by vreid)"
            raise ExportError(f"{file}: not a vreid embedding export ({what}); export the run with "
                              f"`vreid export onnx RUN -o {file}`")

        def get(key: str) -> str:
            if key not in props:
                raise ExportError(f"{file}: metadata key {key!r} is missing; re-export the run with "
                                  "`vreid export onnx`")
            return props[key]

        try:
            prep = Preprocessing(height=int(get("input_height")), width=int(get("input_width")),
                                 mean=tuple(float(v) for v in json.loads(get("mean"))),
                                 std=tuple(float(v) for v in json.loads(get("std"))))
            meta = cls(preprocessing=prep, metric=get("metric"), embedding_dim=int(get("embedding_dim")),
                       inputs=tuple(get("inputs").split(",")), flip=get("flip") == "true",
                       method=props.get("method", ""), source_run=props.get("source_run", ""),
                       vreid_version=props.get("vreid_version", ""),
                       num_cameras=int(props.get("num_cameras", 1)),
                       num_viewpoints=int(props.get("num_viewpoints", 8)),
                       parity={k[len("parity_"):]: v for k, v in props.items() if k.startswith("parity_")})
        except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise ExportError(f"{file}: unreadable vreid metadata ({e}); re-export the run with "
                              "`vreid export onnx`") from None
        if len(prep.mean) != 3 or len(prep.std) != 3:
            raise ExportError(f"{file}: metadata mean/std need three values (R, G, B); re-export the run")
        unknown = [name for name in meta.inputs if name not in INPUT_NOTES]
        if unknown or meta.inputs[:1] != ("images",):
            raise ExportError(f"{file}: inputs {','.join(meta.inputs)} are not vreid's (images[,camera_ids]"
                              "[,viewpoints]); re-export the run with `vreid export onnx`")
        return meta

    def model_info(self) -> dict[str, Any]:
        """The `Embedder.model` fields both backends share (so a gallery can tell which model made it)."""
        return {"run": self.source_run, "method": self.method, "preprocessing": self.preprocessing.as_dict(),
                "inputs": list(self.inputs), "flip": self.flip}


def metadata_for_run(method: Any, run_dir: str, embedding_dim: int) -> ExportMetadata:
    """The metadata of a trained method: preprocessing from its model_info.json (as `vreid eval` uses it), the
    ranking metric and test-time flip from the run's config.yaml (`eval.metric`, `eval.flip`)."""
    import vreid
    from vreid.engine.run_folder import saved_config

    info = method.info
    saved = saved_config(run_dir) or {}
    evaluation = saved.get("eval") if isinstance(saved.get("eval"), dict) else {}
    needs = {need.field for need in method.cfg.required_metadata()}
    return ExportMetadata(
        preprocessing=Preprocessing(height=int(info.height), width=int(info.width),
                                    mean=tuple(float(v) for v in info.mean), std=tuple(float(v) for v in info.std)),
        metric=str(evaluation.get("metric", "euclidean")),
        embedding_dim=int(embedding_dim),
        inputs=("images", *[name for record_field, name in METADATA_INPUTS.items() if record_field in needs]),
        flip=bool(evaluation.get("flip", False)),
        method=method.cfg.name,
        source_run=str(run_dir),
        vreid_version=vreid.__version__,
        num_cameras=int(info.num_cameras),
        num_viewpoints=int(info.num_viewpoints),
    )
