"""The synthetic vehicle world: identities, 3D bodies, cameras, a numpy/Pillow renderer and layout writers.

    from vreid.synth import SynthConfig, render_dataset, render_vehicle, write_preview
    render_dataset("data/synth", SynthConfig(ids=200, cameras=8, preset="hard", layout="veri776"))
    render_vehicle(3, azimuth=180.0).save("rear.png")
"""
from vreid.synth.cameras import CameraSpec, Light, Pose, make_camera, sample_pose
from vreid.synth.catalog import CATALOG, PRESETS, Identity, Preset, VehicleModel, sample_identity, viewpoint_bin
from vreid.synth.dataset import SIDE_FILE, render_dataset
from vreid.synth.render import encode_jpeg, render_view, vehicle_mesh
from vreid.synth.world import SynthConfig, daylight, identity, plan_world, render_vehicle

__all__ = [
    "CATALOG", "CameraSpec", "Identity", "Light", "PRESETS", "Pose", "Preset", "SIDE_FILE", "SynthConfig",
    "VehicleModel", "daylight", "encode_jpeg", "identity", "make_camera", "plan_world", "render_dataset",
    "render_vehicle", "render_view", "sample_identity", "sample_pose", "vehicle_mesh", "viewpoint_bin",
    "write_preview",
]


def write_preview(path, cfg=None, **kwargs):
    """Contact sheet (rows = identities, columns = cameras); see vreid.synth.preview.write_preview."""
    from vreid.synth.preview import write_preview as _write

    return _write(path, cfg, **kwargs)
