"""Opening images: high bit depth scaled (not clipped), broken, truncated and oversized files named with the fix,
in `vreid data check` and inside DataLoader workers alike."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from test_data_loader import cfg
from test_data_trees import make_veri776, veri_name
from vreid.data import DatasetError, ImageDataset, Problem, build_test_loader, check_dataset, load_layout
from vreid.data.images import open_rgb
from vreid.data.records import ImageRecord

GRADIENT = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))  # 8 rows, left black to right white


def gradient_png(path):
    """A 64 x 8 horizontal 16-bit gradient saved as PNG."""
    Image.fromarray(GRADIENT).save(path, "PNG")
    return path


def noise_jpeg(path, size=(120, 90)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
    return path


def test_16_bit_png_follows_the_gradient_in_the_loader(tmp_path):
    path = gradient_png(tmp_path / "g16.png")
    with Image.open(path) as im:
        assert im.mode == "I;16"
    image = ImageDataset([ImageRecord(path=str(path), vehicle_id=1, camera_id=1)])[0]["image"]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (8, 64, 3)
    expected = np.rint(GRADIENT[0] / 257).astype(np.int64)
    np.testing.assert_array_equal(pixels[0, :, 0].astype(np.int64), expected)
    assert (pixels[..., 0] == pixels[..., 2]).all() and pixels.min() == 0 and pixels.max() == 255
    assert (pixels == 255).mean() < 0.05  # PIL's own convert("RGB") clips nearly all of it to white


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16B", np.array([[0, 257, 32896, 65535]], ">u2"), [0, 1, 128, 255]),
    ("I", np.array([[-5, 257, 65535, 90000]], np.int32), [0, 1, 255, 255]),  # 16-bit data, clipped
    ("F", np.array([[-0.5, 0.0, 0.5, 2.0]], np.float32), [0, 0, 128, 255]),  # 0..1 intensities, clipped
])
def test_high_bit_depth_modes_scale_by_their_range(tmp_path, mode, values, expected):
    im = Image.frombytes(mode, (4, 1), values.tobytes())
    path = tmp_path / "x.tif"
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    assert np.asarray(open_rgb(path))[0, :, 1].tolist() == expected
    sample = ImageDataset([ImageRecord(path=str(path), vehicle_id=1, camera_id=1)])[0]  # the loaders use it
    assert np.asarray(sample["image"])[0, :, 1].tolist() == expected


def test_check_decodes_truncated_jpeg(tmp_path):
    root = make_veri776(tmp_path)
    victim = root / "image_train" / veri_name(2, 1, 2)
    data = noise_jpeg(victim).read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with Image.open(victim) as im:
        im.verify()  # the header check alone accepts it
    got = [str(p) for p in check_dataset(root, "veri776")]
    assert len(got) == 1, got
    assert got[0].startswith(f"image_train/{victim.name}: image cannot be read (OSError: image file is truncated")
    assert "(fix: re-extract or re-download this image" in got[0]
    noise_jpeg(victim)  # the whole file is fine
    assert check_dataset(root, "veri776") == []


def broken_query_loader(tmp_path, broken: str):
    """A one-worker test loader over the VeRi tree whose second query image is `broken` ('garbage' or 'huge')."""
    ds = load_layout("veri776", make_veri776(tmp_path))
    victim = ds.query[1].path
    if broken == "garbage":
        with open(victim, "wb") as f:
            f.write(b"not a jpeg")
    else:
        noise_jpeg(victim, size=(40, 40))  # 1600 pixels; the others have 120
    return build_test_loader(ds.query + ds.gallery, cfg(workers=1)), victim


def test_unreadable_image_in_a_worker_names_file_and_fix(tmp_path):
    loader, victim = broken_query_loader(tmp_path, "garbage")
    with pytest.raises(DatasetError) as e:
        list(loader)
    message = str(e.value)
    assert message.startswith("dataset has 1 problem(s):\n- "), message
    assert f"{victim}: image cannot be read (UnidentifiedImageError" in message
    assert "(fix: re-extract or re-download this image" in message and "Traceback" not in message


def test_decompression_bomb_in_a_worker_and_in_check(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # PIL refuses images over twice the limit
    loader, victim = broken_query_loader(tmp_path, "huge")
    with pytest.raises(DatasetError) as e:
        list(loader)
    message = str(e.value)
    assert f"{victim}: image is too large to decode safely (Image size (1600 pixels) exceeds limit" in message
    assert "(fix: resize it to at most 500 pixels (PIL.Image.MAX_IMAGE_PIXELS)" in message
    got = [str(p) for p in check_dataset(tmp_path, "veri776")]
    assert len(got) == 1 and got[0].startswith(f"image_query/{veri_name(5, 3, 1)}: image is too large"), got


def test_dataset_error_pickles_with_its_problems():
    error = DatasetError([Problem(file="a.jpg", message="broken", fix="replace it")], root="/data")
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and again.root == "/data" and str(again) == str(error)
