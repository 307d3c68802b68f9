"""Broken trees: every problem is reported once, naming its file; parsers and load_dataset refuse them cleanly."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from test_data_trees import make_folder, make_vehicleid, make_veri776, make_veriwild, text, veri_name
from vreid.config.schema import DataConfig
from vreid.data import DatasetError, check_dataset, load_dataset


def messages(problems) -> list[str]:
    return [str(p) for p in problems]


def test_clean_trees_have_no_problems(tmp_path):
    for layout, make in (("veri776", make_veri776), ("vehicleid", make_vehicleid), ("veriwild", make_veriwild),
                         ("folder", make_folder)):
        assert check_dataset(make(tmp_path / layout), layout) == []


def test_veri776_broken_tree_lists_each_problem(tmp_path):
    root = make_veri776(tmp_path)
    (root / "image_train" / veri_name(1, 2, 1)).unlink()  # missing image
    (root / "image_test" / veri_name(4, 4, 0)).unlink()  # query id 4 now absent from gallery ...
    text(root / "name_test.txt", "\n".join([veri_name(5, 4, 1), veri_name(5, 3, 2)]) + "\n")  # ... and unlisted
    (root / "image_train" / veri_name(2, 1, 2)).write_bytes(b"not a jpeg")  # unreadable
    text(root / "name_query.txt", f"{veri_name(4, 3, 0)}\nbadname.jpg\n{veri_name(5, 3, 1)}\n")  # malformed line 2
    got = messages(check_dataset(root, "veri776"))
    assert len(got) == 4, got
    assert any(m.startswith(f"image_train/{veri_name(1, 2, 1)}: image listed in name_train.txt line 2 is missing")
               for m in got)
    assert any(m.startswith("name_query.txt:2: malformed image name 'badname.jpg'") for m in got)
    assert any(m.startswith(f"image_train/{veri_name(2, 1, 2)}: image cannot be read") for m in got)
    assert any(m.startswith("name_query.txt:") and "1 query vehicle id(s) (1 image(s)) have no image in the "
               "gallery: 4" in m for m in got)
    # without image verification the unreadable file is not opened
    assert len(check_dataset(root, "veri776", verify_images=False)) == 3


def test_missing_list_file_and_empty_split(tmp_path):
    root = make_veri776(tmp_path)
    (root / "name_train.txt").unlink()
    text(root / "name_test.txt", "")
    got = messages(check_dataset(root, "veri776"))
    assert any(m.startswith("name_train.txt: missing list file") for m in got)
    assert any(m.startswith("name_test.txt: gallery split is empty") for m in got)
    assert any("train split is empty" in m for m in got)
    assert any("gallery split is empty" in m for m in got)


def test_vehicleid_image_in_list_but_not_on_disk(tmp_path):
    root = make_vehicleid(tmp_path)
    text(root / "train_test_split/train_list.txt", "0000001 10\n0000099 12\n0000003\n")
    got = messages(check_dataset(root, "vehicleid"))
    assert len(got) == 2, got
    assert any(m.startswith("image/0000099.jpg: image listed in train_test_split/train_list.txt line 2 is missing")
               for m in got)
    assert any(m.startswith("train_test_split/train_list.txt:3: malformed line '0000003'") for m in got)


def test_veriwild_missing_vehicle_folder_and_unknown_word(tmp_path):
    root = make_veriwild(tmp_path)
    text(root / "train_test_split/train_list.txt", "00001/000001\n00042/000100\n00042/000101\n")
    info = (root / "train_test_split/vehicle_info.txt").read_text()
    info += "00042/000100;1;2018-03-01 12:00:00;M;sedan;plaid\n00042/000101;1;2018-03-01 12:00:00;M;sedan;plaid\n"
    text(root / "train_test_split/vehicle_info.txt", info)
    got = messages(check_dataset(root, "veriwild"))
    assert len(got) == 2, got
    assert any(m.startswith("images/00042/: folder is missing; 2 image(s) listed in train_test_split/train_list.txt")
               for m in got)
    assert any(m.startswith("train_test_split/vehicle_info.txt:9: unknown colour word 'plaid' on 2 line(s)")
               for m in got)


def test_folder_bad_rows_and_query_without_gallery(tmp_path):
    root = make_folder(tmp_path)
    (root / "gallery.csv").unlink()
    text(root / "train.csv", "path,vehicle_id,camera_id\ncams/a/1.jpg,7,0\ncams/a/2.jpg,x,1\ncams/b/3.jpg,8\n")
    got = messages(check_dataset(root, "folder"))
    assert len(got) == 3, got
    assert any(m.startswith("train.csv:3: malformed line 'cams/a/2.jpg,x,1'") for m in got)
    assert any(m.startswith("train.csv:4: expected 3 fields, got 2") for m in got)
    assert any("query has images but gallery is empty" in m for m in got)


def test_parsers_and_load_dataset_raise_dataset_error(tmp_path):
    root = make_veri776(tmp_path)
    cfg = DataConfig(layout="veri776", root=str(root))
    assert len(load_dataset(cfg).train) == 6
    (root / "image_query" / veri_name(5, 3, 1)).unlink()
    assert len(load_dataset(cfg, verify=False).query) == 2  # parsing alone does not look at images
    with pytest.raises(DatasetError) as e:
        load_dataset(cfg)
    assert f"image_query/{veri_name(5, 3, 1)}: image listed in name_query.txt line 2 is missing" in str(e.value)
    with pytest.raises(DatasetError, match="dataset root is not a folder"):
        load_dataset(DataConfig(layout="veri776", root=str(tmp_path / "nowhere")))
    with pytest.raises(DatasetError, match="data.root"):
        load_dataset(DataConfig(layout="veri776", root=""))


def cli() -> typer.Typer:
    from vreid.cli.main import app

    return app


def test_cli_check_clean_and_broken(tmp_path):
    root = make_vehicleid(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(cli(), ["data", "check", str(root), "--layout", "vehicleid", "--test-size", "1600"])
    assert ok.exit_code == 0, ok.output
    assert "no problems found" in ok.output and "train" in ok.output and "1600" in ok.output
    (root / "image" / "0000002.jpg").unlink()
    bad = runner.invoke(cli(), ["data", "check", str(root), "--layout", "vehicleid"])
    assert bad.exit_code == 1
    assert "1 problem(s)" in bad.output and "image/0000002.jpg: image listed in" in bad.output
    unknown = runner.invoke(cli(), ["data", "check", str(root), "--layout", "nope"])
    assert unknown.exit_code == 2 and "unknown dataset layout 'nope'" in unknown.output
