"""Tiny dataset trees in the four layouts (written by the tests) and the parsers' view of them."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vreid.data import LAYOUTS, DatasetError, load_layout


def jpg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade % 256, (3 * shade) % 256, (7 * shade) % 256)).save(path, "JPEG")


def text(path: Path, body: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.encode(encoding))


# ----- VeRi-776: train ids 1,2,3 on cameras 1,2; test ids 4,5 on cameras 3,4; queries of 4 and 5 --------------
VERI_SPLITS = {
    "train": [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 1)],
    "query": [(4, 3), (5, 3)],
    "test": [(4, 4), (5, 4), (5, 3)],
}


def veri_name(vid: int, cam: int, k: int) -> str:
    return f"{vid:04d}_c{cam:03d}_{10000 + k:08d}_0.jpg"


def make_veri776(root: Path) -> Path:
    names = {}
    for split, items in VERI_SPLITS.items():
        names[split] = [veri_name(v, c, k) for k, (v, c) in enumerate(items)]
        for k, n in enumerate(names[split]):
            jpg(root / f"image_{split}" / n, k)
        text(root / f"name_{split}.txt", "\n".join(names[split]) + "\n")

    def xml(tag: str, items: list[str]) -> str:
        rows = "".join(f'<Item imageName="{n}" vehicleID="{n[:4]}" cameraID="{n[5:9]}" colorID="{1 + int(n[:4]) % 10}"'
                       f' typeID="{1 + int(n[:4]) % 9}" />\n' for n in items)
        return (f'<?xml version="1.0" encoding="gb2312"?>\n<{tag} Version="1.0">\n<Items number="{len(items)}">\n'
                f"{rows}</Items>\n</{tag}>\n")

    text(root / "train_label.xml", xml("TrainingImages", names["train"]), "gb2312")
    text(root / "test_label.xml", xml("TestImages", names["test"] + names["query"]), "gb2312")
    return root


# ----- VehicleID: train ids 10, 11; test_list_800 ids 20, 21 ---------------------------------------------------
def make_vehicleid(root: Path) -> Path:
    train = [("0000001", 10), ("0000002", 10), ("0000003", 11)]
    test = [("0000004", 20), ("0000005", 20), ("0000006", 21), ("0000007", 21)]
    for k, (img, _) in enumerate(train + test):
        jpg(root / "image" / f"{img}.jpg", k)
    text(root / "train_test_split/train_list.txt", "".join(f"{i} {v}\n" for i, v in train))
    text(root / "train_test_split/test_list_800.txt", "".join(f"{i} {v}\n" for i, v in test))
    text(root / "train_test_split/test_list_1600.txt", "".join(f"{i} {v}\n" for i, v in test[:2]))
    text(root / "attribute/color_attr.txt", "10 3\n11 4\n20 5\n")
    text(root / "attribute/model_attr.txt", "10 100\n21 7\n")
    return root


# ----- VeRi-Wild: train ids 1, 2; test_3000 ids 3, 4 with one query each ---------------------------------------
def make_veriwild(root: Path) -> Path:
    info = ["id/image;Camera ID;Time;Model;Type;Color"]
    entries = {"train": ["00001/000001", "00001/000002", "00002/000003"],
               "test": ["00003/000004", "00003/000005", "00004/000006", "00004/000007"],
               "query": ["00003/000004", "00004/000006"]}
    words = [("SUV", "white"), ("sedan", "Black"), ("Pickup", "grey"), ("hatchback", "red")]
    for k, e in enumerate(dict.fromkeys(entries["train"] + entries["test"])):
        jpg(root / "images" / f"{e}.jpg", k)
        t, c = words[k % len(words)]
        info.append(f"{e};{1 + k % 3};2018-03-0{1 + k % 5} 12:00:{k:02d};Model {'AB'[k % 2]};{t};{c}")
    split = root / "train_test_split"
    text(split / "train_list.txt", "\n".join(entries["train"]) + "\n")
    text(split / "test_3000.txt", "\n".join(entries["test"]) + "\n")
    text(split / "test_3000_query.txt", "\n".join(entries["query"]) + "\n")
    text(split / "vehicle_info.txt", "\n".join(info) + "\n")
    return root


# ----- folder ("plain"): your own cameras --------------------------------------------------------------------
def make_folder(root: Path, with_train: bool = True) -> Path:
    rows = {"train": [("cams/a/1.jpg", 7, 0, 5.0), ("cams/a/2.jpg", 7, 1, ""), ("cams/b/3.jpg", 8, 1, 9.5)],
            "query": [("cams/q/4.jpg", 9, 0, "")],
            "gallery": [("cams/g/5.jpg", 9, 2, ""), ("cams/g/6.jpg", 10, 2, "")]}
    if not with_train:
        del rows["train"]
    for split, items in rows.items():
        body = "path,vehicle_id,camera_id,timestamp\n"
        for k, (p, v, c, t) in enumerate(items):
            jpg(root / p, k)
            body += f"{p},{v},{c},{t}\n"
        text(root / f"{split}.csv", body)
    return root


MAKERS = {"veri776": make_veri776, "vehicleid": make_vehicleid, "veriwild": make_veriwild, "folder": make_folder}


def test_every_layout_is_registered():
    assert set(LAYOUTS.names()) == set(MAKERS)


def test_veri776_counts_labels_and_query_attributes(tmp_path):
    ds = load_layout("veri776", make_veri776(tmp_path))
    assert ds.protocol == "veri776" and ds.name == "veri776"
    assert ds.summary() == {"train": {"images": 6, "ids": 3, "cameras": 2},
                            "query": {"images": 2, "ids": 2, "cameras": 1},
                            "gallery": {"images": 3, "ids": 2, "cameras": 2}}
    r = ds.train[0]
    assert Path(r.path).is_absolute() and Path(r.path).is_file()
    assert (r.vehicle_id, r.camera_id, r.timestamp) == (1, 1, 10000.0)
    assert (r.color_id, r.type_id) == (2, 2)
    q = ds.query[0]  # query labels come from test_label.xml by name
    assert (q.vehicle_id, q.camera_id, q.color_id, q.type_id) == (4, 3, 5, 5)


def test_vehicleid_uses_whole_test_list_for_query_and_gallery(tmp_path):
    root = make_vehicleid(tmp_path)
    ds = load_layout("vehicleid", root)
    assert ds.protocol == "vehicleid" and ds.info["test_size"] == 800
    assert ds.summary()["train"] == {"images": 3, "ids": 2, "cameras": 1}
    assert [r.path for r in ds.query] == [r.path for r in ds.gallery] and len(ds.query) == 4
    assert {r.vehicle_id: (r.color_id, r.model_id) for r in ds.train} == {10: (3, 100), 11: (4, None)}
    assert len(load_layout("vehicleid", root, test_size=1600).query) == 2
    with pytest.raises(DatasetError, match="test_list_2400.txt.*test_list_1600.txt, test_list_800.txt"):
        load_layout("vehicleid", root, test_size=2400)


def test_veriwild_gallery_is_test_minus_query_and_attributes_map(tmp_path):
    ds = load_layout("veriwild", make_veriwild(tmp_path))
    assert ds.summary() == {"train": {"images": 3, "ids": 2, "cameras": 3},
                            "query": {"images": 2, "ids": 2, "cameras": 2},
                            "gallery": {"images": 2, "ids": 2, "cameras": 2}}
    assert not {r.path for r in ds.query} & {r.path for r in ds.gallery}
    t0 = ds.train[0]
    assert (t0.vehicle_id, t0.camera_id, t0.type_id, t0.color_id) == (1, 1, 2, 7)  # SUV, white
    assert ds.train[1].color_id == 10 and ds.train[2].color_id == 4  # "Black", "grey" -> gray
    assert t0.timestamp == 1519905600.0  # 2018-03-01 12:00:00 UTC
    assert {r.model_id for r in ds.train} == {0, 1}  # "Model A" -> 0, "Model B" -> 1


def test_folder_layout_and_missing_train(tmp_path):
    ds = load_layout("folder", make_folder(tmp_path / "a"))
    assert ds.protocol == "plain"
    assert ds.summary()["train"] == {"images": 3, "ids": 2, "cameras": 2}
    assert ds.train[0].timestamp == 5.0 and ds.train[1].timestamp is None
    ds = load_layout("folder", make_folder(tmp_path / "b", with_train=False))
    assert ds.train == [] and len(ds.query) == 1 and len(ds.gallery) == 2


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_side_labels_fill_extra_fields(tmp_path, layout):
    root = MAKERS[layout](tmp_path)
    ds = load_layout(layout, root)
    rec = ds.train[0]
    rel = Path(rec.path).relative_to(root).as_posix()
    cam = 5 if layout == "vehicleid" else rec.camera_id
    text(root / "vreid_labels.csv", "path,vehicle_id,camera_id,timestamp,color_id,type_id,model_id,azimuth,"
                                    f"elevation,viewpoint\n{rel},{rec.vehicle_id},{cam},12.5,3,4,9,45.0,10.0,"
                                    "left_front\nnot/in/any/split.jpg,1,1,,,,,,,\n")
    got = load_layout(layout, root).train[0]
    assert (got.timestamp, got.color_id, got.type_id, got.model_id) == (12.5, 3, 4, 9)
    assert (got.azimuth, got.elevation, got.viewpoint) == (45.0, 10.0, 3)
    assert got.camera_id == cam and got.vehicle_id == rec.vehicle_id


def test_side_label_disagreeing_vehicle_id_is_a_problem(tmp_path):
    root = make_veri776(tmp_path)
    text(root / "vreid_labels.csv", "path,vehicle_id,viewpoint\nimage_train/" + veri_name(1, 1, 0) + ",99,2\n")
    with pytest.raises(DatasetError, match="vreid_labels.csv.*vehicle_id 99"):
        load_layout("veri776", root)
