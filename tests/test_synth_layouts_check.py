"""Every layout `vreid synth` writes passes `vreid data check` and parses to the requested counts."""
import pytest
from typer.testing import CliRunner

from vreid.data import check_dataset, load_layout
from vreid.synth import SynthConfig, render_dataset

IDS, CAMERAS = 12, 4


@pytest.fixture(scope="module", params=[(layout, preset) for preset in ("medium", "crossview")
                                        for layout in ("veri776", "vehicleid", "veriwild", "folder")],
                ids=lambda p: "-".join(p))
def written(request, tmp_path_factory):
    layout, preset = request.param
    root = tmp_path_factory.mktemp(f"{layout}-{preset}") / "ds"
    cfg = SynthConfig(ids=IDS, cameras=CAMERAS, seed=3, preset=preset, size=32, layout=layout, workers=0)
    return layout, root, render_dataset(root, cfg)


def test_written_layout_passes_check_and_counts_match(written):
    layout, root, summary = written
    assert check_dataset(root, layout) == []
    ds = load_layout(layout, root)
    train_ids = {r.vehicle_id for r in ds.train}
    test_ids = {r.vehicle_id for r in ds.query} | {r.vehicle_id for r in ds.gallery}
    assert len(train_ids) == summary["train_ids"] and len(test_ids) == summary["test_ids"]
    assert len(train_ids) + len(test_ids) == IDS and not train_ids & test_ids
    assert {r.vehicle_id for r in ds.query} <= {r.vehicle_id for r in ds.gallery}
    assert all(r.viewpoint is not None and r.color_id is not None for r in ds.train)  # side file merged
    if layout != "vehicleid":
        assert {r.camera_id for r in ds.train + ds.gallery} <= set(range(1, CAMERAS + 1))


def test_cli_data_check_accepts_written_layout(written):
    from vreid.cli.main import app

    layout, root, _ = written
    result = CliRunner().invoke(app, ["data", "check", str(root), "--layout", layout])
    assert result.exit_code == 0, result.output


def test_cli_data_check_reports_a_deleted_image(tmp_path):
    from vreid.cli.main import app

    root = tmp_path / "ds"
    render_dataset(root, SynthConfig(ids=6, cameras=3, seed=1, size=32, layout="veri776", workers=0))
    victim = sorted((root / "image_test").iterdir())[0]
    victim.unlink()
    result = CliRunner().invoke(app, ["data", "check", str(root), "--layout", "veri776"])
    assert result.exit_code == 1 and victim.name in result.output
