"""VeRi-776 orientation labels (keypoint_orient_{train,test}.txt) and the preflight check of configured metadata."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_data_trees import VERI_SPLITS, make_veri776, text, veri_name
from vreid.config import ConfigError
from vreid.config.schema import load_experiment
from vreid.data import load_layout
from vreid.data.check import check_dataset, viewpoint_counts
from vreid.data.layouts import LAYOUTS
from vreid.engine.preflight import check_metadata_present

ROOT = Path(__file__).resolve().parents[1]
KEYPOINTS = " ".join(["-1"] * 40)  # 20 keypoints, none visible: only the last column matters


def names(split: str) -> list[str]:
    return [veri_name(v, c, k) for k, (v, c) in enumerate(VERI_SPLITS[split])]


def orient_line(name: str, view: int) -> str:
    return f"{name} {KEYPOINTS} {view}"


def write_orientations(root: Path, train: dict[str, int], test: dict[str, int], prefix: str = "",
                       file: str = "keypoint_orient_{}.txt") -> None:
    for stem, views in (("train", train), ("test", test)):
        text(root / file.format(stem), "".join(orient_line(prefix + n, v) + "\n" for n, v in views.items()))


def labelled_tree(root: Path) -> Path:
    """Every train image but the last and every test image (query images share test names) get a bin."""
    make_veri776(root)
    write_orientations(root, {n: i % 8 for i, n in enumerate(names("train")[:-1])},
                       {n: 7 - i for i, n in enumerate(names("test") + names("query"))})
    return root


def problems_of(root: Path) -> list[str]:
    return [f"{p.file}:{p.line}: {p.message}" for p in LAYOUTS.get("veri776").parse_root(root)[1].problems]


def test_viewpoints_parse_into_the_records_they_name(tmp_path):
    ds = load_layout("veri776", labelled_tree(tmp_path))
    assert [r.viewpoint for r in ds.train] == [0, 1, 2, 3, 4, None]  # the last has no line: stays unknown
    test_views = {n: 7 - i for i, n in enumerate(names("test") + names("query"))}
    assert [r.viewpoint for r in ds.gallery] == [test_views[n] for n in names("test")]
    assert [r.viewpoint for r in ds.query] == [test_views[n] for n in names("query")]
    assert ds.info["orientation_labels"] == 5 + 3 + 2


def test_transreid_names_and_paths_are_read_too(tmp_path):
    make_veri776(tmp_path)
    write_orientations(tmp_path, {names("train")[0]: 6}, {names("test")[0]: 5}, prefix="VeRi/image_x/",
                       file="datasets/keypoint_{}.txt")
    ds = load_layout("veri776", tmp_path)
    assert ds.train[0].viewpoint == 6 and ds.gallery[0].viewpoint == 5 and ds.train[1].viewpoint is None


def test_without_the_files_every_viewpoint_is_none(tmp_path):
    ds = load_layout("veri776", make_veri776(tmp_path))
    assert all(r.viewpoint is None for s in (ds.train, ds.query, ds.gallery) for r in s)
    assert ds.info["orientation_labels"] == 0


def test_malformed_line_unknown_image_and_bin_out_of_range_are_problems(tmp_path):
    root = labelled_tree(tmp_path)
    train = (root / "keypoint_orient_train.txt").read_text()
    train += "just-a-name.jpg\n" + orient_line("0099_c001_00000001_0.jpg", 1) + "\n"
    train += orient_line(names("train")[-1], 9) + "\n" + f"{names('train')[-1]} 1 2 x\n"
    (root / "keypoint_orient_train.txt").write_text(train)
    got = problems_of(root)
    assert len(got) == 3, got
    assert got[0].startswith("keypoint_orient_train.txt:6: malformed line 'just-a-name.jpg'")
    assert got[1].startswith(f"keypoint_orient_train.txt:8: {names('train')[-1]}: orientation bin 9 is not one of 0..7")
    assert got[2].startswith("keypoint_orient_train.txt:9: malformed line")
    assert LAYOUTS.get("veri776").parse_root(root)[0].info["orientation_unlisted"] == 1  # counted, not a problem
    problem = LAYOUTS.get("veri776").parse_root(root)[1].problems[1]
    assert "0 front" in problem.fix and "7 right_rear" in problem.fix
    assert len(check_dataset(root, "veri776", verify_images=False)) == 3


def test_lines_for_images_no_list_holds_are_counted_not_problems(tmp_path):
    root = labelled_tree(tmp_path)
    with (root / "keypoint_orient_test.txt").open("a") as f:
        f.write(orient_line(names("train")[0], 2) + "\n")
    assert problems_of(root) == []
    ds = load_layout("veri776", root)
    assert ds.info["orientation_unlisted"] == 1


def test_a_missing_list_file_does_not_flood_unknown_images(tmp_path):
    root = labelled_tree(tmp_path)
    (root / "name_train.txt").unlink()
    assert [p for p in problems_of(root) if "orient" in p] == []


def test_data_check_counts_viewpoints(tmp_path):
    from vreid.cli.main import app

    root = labelled_tree(tmp_path)
    ds = load_layout("veri776", root)
    assert viewpoint_counts(ds) == {"train": (5, 6), "query": (2, 2), "gallery": (3, 3)}
    out = CliRunner().invoke(app, ["data", "check", str(root), "--layout", "veri776"])
    assert out.exit_code == 0, out.output
    assert "images with a viewpoint: train 5/6, query 2/2, gallery 3/3" in out.output


def mbr_config(root: Path, *overrides: str):
    return load_experiment(ROOT / "configs" / "mbr" / "veri776.yaml", [f"data.root={root}", *overrides])


def test_preflight_refuses_viewpoint_metadata_without_viewpoints(tmp_path):
    root = make_veri776(tmp_path)
    ds = load_layout("veri776", root)
    with pytest.raises(ConfigError) as e:
        check_metadata_present(mbr_config(root), ds)
    message = str(e.value)
    assert "model.metadata" in message and "viewpoint" in message and "keypoint_orient_{train,test}.txt" in message
    assert "model.metadata=camera" in message and "veri776" in message
    check_metadata_present(mbr_config(root, "model.metadata=camera"), ds)  # cameras it has
    with pytest.raises(ConfigError, match="model.side_info.viewpoint=false"):
        check_metadata_present(load_experiment(ROOT / "configs" / "clip_senet" / "veri776.yaml",
                                               [f"data.root={root}"]), ds)


def test_preflight_accepts_viewpoint_metadata_with_the_files(tmp_path):
    root = labelled_tree(tmp_path)
    ds = load_layout("veri776", root)
    check_metadata_present(mbr_config(root), ds)
    check_metadata_present(load_experiment(ROOT / "configs" / "clip_senet" / "veri776.yaml",
                                           [f"data.root={root}"]), ds)


def test_camera_metadata_on_a_dataset_without_cameras_is_refused(tmp_path):
    from test_data_trees import make_vehicleid

    root = make_vehicleid(tmp_path)
    ds = load_layout("vehicleid", root)
    cfg = load_experiment(ROOT / "configs" / "mbr" / "vehicleid.yaml", [f"data.root={root}", "model.metadata=camera"])
    with pytest.raises(ConfigError, match=r"camera_id.*model.metadata=none"):
        check_metadata_present(cfg, ds)
    check_metadata_present(load_experiment(ROOT / "configs" / "mbr" / "vehicleid.yaml", [f"data.root={root}"]), ds)


@pytest.mark.parametrize("mode, fields", [("none", []), ("camera", ["camera_id"]), ("viewpoint", ["viewpoint"]),
                                          ("camera+viewpoint", ["camera_id", "viewpoint"])])
def test_mbr_declares_the_metadata_its_mode_reads(mode, fields):
    from vreid.methods.mbr import MbrConfig

    needs = MbrConfig(metadata=mode).required_metadata()
    assert [n.field for n in needs] == fields and all(n.key == "model.metadata" for n in needs)


def test_methods_without_metadata_declare_none():
    from vreid.methods.base import MethodConfig

    assert MethodConfig().required_metadata() == []
