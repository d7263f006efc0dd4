import dataclasses
import gzip
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trials.data import (
    FASHION_MNIST_DIR,
    NUM_COARSE,
    NUM_TEXTURES,
    SYNTHETIC_NUM_CLASSES,
    DatasetError,
    TrialData,
    _class_quotas,
    _decode_images,
    _texture_bank,
    check_dataset,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_imagefolder,
    make_synthetic,
    read_idx,
    render_synthetic,
    sample_synthetic_latents,
)
from trials.train import ProxyConfig, train_and_evaluate


def test_synthetic_is_deterministic_and_seed_dependent():
    a = make_synthetic(120, 36, img_size=32, seed=3)
    b = make_synthetic(120, 36, img_size=32, seed=3)
    c = make_synthetic(120, 36, img_size=32, seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x)
    assert torch.equal(a.train_y, b.train_y) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)


@pytest.mark.parametrize("img_size", [32, 48, 64])
def test_synthetic_shapes_balance_and_normalisation(img_size):
    data = make_synthetic(240, 120, img_size=img_size, seed=0)
    assert data.train_x.shape == (240, 3, img_size, img_size) and data.train_x.dtype == torch.float32
    assert data.val_x.shape == (120, 3, img_size, img_size)
    assert data.train_y.dtype == torch.int64 and data.img_size == img_size
    assert data.num_classes == SYNTHETIC_NUM_CLASSES >= 10 and len(data.class_names) == data.num_classes
    assert torch.bincount(data.train_y, minlength=data.num_classes).tolist() == [240 // 15] * 15
    assert torch.bincount(data.val_y, minlength=data.num_classes).tolist() == [120 // 15] * 15
    assert data.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (data.train_x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_synthetic_val_images_do_not_depend_on_train_size():
    small, large = make_synthetic(60, 24, seed=1), make_synthetic(120, 24, seed=1)
    assert torch.equal(small.val_y, large.val_y)
    # Same images up to the (train-statistics) normalisation: an affine map per channel.
    for c in range(3):
        corr = np.corrcoef(small.val_x[:, c].flatten().numpy(), large.val_x[:, c].flatten().numpy())[0, 1]
        assert corr > 0.99999


def test_textures_are_distinct_equal_mass_and_survive_a_4x4_patchify():
    bank = _texture_bank(1)
    assert len({b.tobytes() for b in bank}) == NUM_TEXTURES
    assert np.array_equal(bank[0].T, bank[1])  # horizontal and vertical stripes
    assert len({b.sum() for b in bank}) == 1  # brightness alone says nothing
    # Every aligned 4x4 patch of a square holds a full stripe period, so a stride-4 stem sees it.
    patches = bank.reshape(NUM_TEXTURES, 3, 4, 3, 4).transpose(0, 1, 3, 2, 4).reshape(NUM_TEXTURES, 9, 16)
    assert (patches.sum(-1) == 8).all()
    assert np.array_equal(_texture_bank(2)[2], np.kron(bank[2], np.ones((2, 2))))


def _render_pair(changed: dict, img_size=32, n=64):
    latents = sample_synthetic_latents(n, img_size, np.random.default_rng(0))
    other = dataclasses.replace(latents, **changed(latents))
    img = render_synthetic(latents, img_size, np.random.default_rng(1))
    img_other = render_synthetic(other, img_size, np.random.default_rng(1))
    return latents, other, img, img_other


@pytest.mark.parametrize("which, same_cols, diff_cols", [
    ("value_b", slice(0, 16), slice(16, 32)),  # right square lives in the right half
    ("value_a", slice(16, 32), slice(0, 16)),  # left square lives in the left half
])
def test_label_needs_both_far_apart_motifs(which, same_cols, diff_cols):
    """Changing only one square changes every label while the other square's half of the image,
    and so any patch around it, stays pixel-identical: no patch holding one square decides the label."""
    latents, other, img, img_other = _render_pair(lambda lat: {which: (getattr(lat, which) + 1) % NUM_TEXTURES})
    assert (latents.labels() != other.labels()).all()
    assert np.array_equal(img[..., same_cols], img_other[..., same_cols])
    assert not np.array_equal(img[..., diff_cols], img_other[..., diff_cols])


def test_coarse_factor_needs_the_whole_image():
    """A single quadrant barely tells the coarse state (random offset, tint and gradient),
    comparing the four quadrants does: the factor lives at image scale. Quadrant medians are
    used because the striped squares (half-filled, at most 144 of a quadrant's 256 pixels) only
    brighten pixels."""
    latents = sample_synthetic_latents(1200, 32, np.random.default_rng(0))
    img = render_synthetic(latents, 32, np.random.default_rng(1)).mean(axis=1)
    quad = {(i, j): np.median(img[:, 16 * i:16 * i + 16, 16 * j:16 * j + 16].reshape(len(img), -1), axis=1)
            for i in (0, 1) for j in (0, 1)}

    def holdout_accuracy(stat):  # nearest class mean in 1-D, fitted on the first half
        means = np.array([stat[:600][latents.coarse[:600] == c].mean() for c in range(NUM_COARSE)])
        pred = np.abs(stat[600:, None] - means).argmin(axis=1)
        return (pred == latents.coarse[600:]).mean()

    assert holdout_accuracy(quad[0, 0]) < 0.65
    assert holdout_accuracy(quad[0, 0] + quad[1, 1] - quad[0, 1] - quad[1, 0]) > 0.95


def test_synthetic_generation_is_fast():
    import time

    start = time.perf_counter()
    make_synthetic(2500, 0, img_size=32, seed=0)
    assert time.perf_counter() - start < 5.0


def _write_pngs(root, classes, per_class, size=(20, 12)):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((*size[::-1], 3), 40 + 80 * c, dtype=np.uint8) + rng.integers(0, 20, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")


def _write_tiny(root, classes, per_class, ext="png"):
    """per_class 4x4 images in each class folder; the pixel value is the class index."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4, 3), c, dtype=np.uint8)).save(root / name / f"{i:03d}.{ext}")


@pytest.fixture
def opened(monkeypatch):
    """Paths passed to PIL.Image.open during the test, from any thread."""
    paths = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        paths.append(Path(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return paths


def test_imagefolder_split_and_resize(tmp_path):
    _write_pngs(tmp_path, ["cat", "dog", "eel"], per_class=5)
    data = load_imagefolder(tmp_path, img_size=16, val_fraction=0.2, seed=0)
    assert data.train_x.shape == (12, 3, 16, 16) and data.val_x.shape == (3, 3, 16, 16)
    assert data.class_names == ("cat", "dog", "eel") and data.num_classes == 3
    assert torch.bincount(data.val_y).tolist() == [1, 1, 1]
    again = load_dataset("imagefolder", tmp_path, img_size=16, seed=0)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.val_y, data.val_y)
    # brighter class folders stay brighter after normalisation
    means = [data.train_x[data.train_y == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2]


def test_imagefolder_sample_is_stratified_seeded_and_only_it_is_decoded(tmp_path, opened):
    _write_tiny(tmp_path, ["a", "b", "c", "d"], per_class=30)
    data = load_imagefolder(tmp_path, img_size=8, seed=0, max_train=40, max_val=8, min_per_class=5)
    assert torch.bincount(data.train_y).tolist() == [10] * 4 and torch.bincount(data.val_y).tolist() == [2] * 4
    # Labels follow the folders: the pixel value written is the class index, standardisation keeps the order.
    per_class = [data.train_x[data.train_y == c].mean().item() for c in range(4)]
    assert per_class == sorted(per_class) and len(set(per_class)) == 4
    # Only the 48 sampled files were opened (of 120), each once, and val files are not training files.
    assert len(opened) == 48 == len(set(opened))
    first = set(opened)
    opened.clear()
    load_imagefolder(tmp_path, img_size=8, seed=0, max_train=40, max_val=8, min_per_class=5)
    assert set(opened) == first
    opened.clear()
    load_imagefolder(tmp_path, img_size=8, seed=1, max_train=40, max_val=8, min_per_class=5)
    assert set(opened) != first and len(opened) == 48


def test_imagefolder_decodes_the_sample_whatever_the_folder_size(tmp_path, opened):
    for n in (20, 200):
        _write_tiny(tmp_path / str(n), ["a", "b"], per_class=n, ext="jpg")
        opened.clear()
        data = load_imagefolder(tmp_path / str(n), img_size=8, max_train=10, max_val=4)
        assert len(opened) == 14 and data.train_x.shape == (10, 3, 8, 8)


def test_imagefolder_samples_the_val_folder(tmp_path, opened):
    _write_tiny(tmp_path / "train", ["a", "b"], per_class=12)
    _write_tiny(tmp_path / "val", ["a", "b"], per_class=10)
    data = load_dataset("imagefolder", tmp_path, img_size=8, max_train=5, max_val=4)
    assert len(data.train_y) == 5 and torch.bincount(data.val_y).tolist() == [2, 2]
    assert data.class_names == ("a", "b")
    assert sorted(torch.bincount(data.train_y).tolist()) == [2, 3]
    val_files = [p for p in opened if p.parts[-3] == "val"]
    assert len(val_files) == 4 and len(opened) == 9
    assert sorted(p.parent.name for p in val_files) == ["a", "a", "b", "b"]


def test_imagefolder_listing_rules(tmp_path):
    """Extensions in any case, hidden files and other files ignored, empty class folders are no class."""
    _write_tiny(tmp_path, ["a", "b"], per_class=3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "UPPER.JPG")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "x.webp")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    data = load_imagefolder(tmp_path, img_size=4, val_fraction=0.4)
    assert data.class_names == ("a", "b")
    assert torch.bincount(data.train_y).tolist() == [3, 2] and torch.bincount(data.val_y).tolist() == [2, 1]


def test_imagefolder_keeps_a_class_subset_when_the_sample_is_spread_too_thin(tmp_path, opened, caplog):
    classes = [f"k{i:02d}" for i in range(30)]
    _write_tiny(tmp_path / "train", classes, per_class=15)
    _write_tiny(tmp_path / "val", classes, per_class=3)
    with caplog.at_level(logging.INFO, logger="trials.data"):
        data = load_imagefolder(tmp_path, img_size=4, max_train=40, max_val=8, min_per_class=10, seed=0)
    # 40 images at 10 per class: 4 classes of the 30, each with its 10, val from the same 4 classes.
    assert data.num_classes == 4 and len(data.class_names) == 4
    assert set(data.class_names) <= set(classes) and list(data.class_names) == sorted(data.class_names)
    assert torch.bincount(data.train_y).tolist() == [10] * 4 and torch.bincount(data.val_y).tolist() == [2] * 4
    assert {p.parent.name for p in opened} == set(data.class_names)
    assert any("4 of 30 classes kept" in r.getMessage() for r in caplog.records)
    # Labels are re-indexed in name order: the pixel value written is the original class index.
    raw = [classes.index(n) for n in data.class_names]
    per_label = [data.train_x[data.train_y == c].mean().item() for c in range(4)]
    assert np.argsort(per_label).tolist() == np.argsort(raw).tolist()
    subsets = {load_imagefolder(tmp_path, img_size=4, max_train=40, max_val=8, min_per_class=10, seed=s).class_names
               for s in range(4)}
    assert len(subsets) > 1
    # Enough images for the floor, or no cap: every class.
    assert load_imagefolder(tmp_path, img_size=4, max_train=300, max_val=30, min_per_class=10).num_classes == 30
    assert load_imagefolder(tmp_path, img_size=4, max_train=40, max_val=8, min_per_class=0).num_classes == 30


def test_imagefolder_grey_palette_and_rgba_files_become_rgb(tmp_path):
    (tmp_path / "grey").mkdir()
    (tmp_path / "rgba").mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 100, np.uint8), "L").save(tmp_path / "grey" / f"{i}.png")
        Image.fromarray(np.full((6, 6), 100, np.uint8), "L").convert("P").save(tmp_path / "grey" / f"p{i}.png")
        Image.fromarray(np.full((6, 6), 200, np.uint8), "L").save(tmp_path / "grey" / f"{i}.jpg", quality=100)
        rgba = np.zeros((6, 6, 4), np.uint8) + np.array([10, 20, 30, 128], np.uint8)
        Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba" / f"{i}.png")
    paths = sorted(str(p) for p in tmp_path.rglob("*.*"))
    pixels = _decode_images(paths, img_size=6, workers=2)
    assert pixels.shape == (12, 3, 6, 6) and pixels.dtype == torch.uint8
    expected = {".jpg": [200] * 3, ".png": [100] * 3}
    for path, img in zip(paths, pixels):
        want = [10, 20, 30] if "rgba" in path else expected[Path(path).suffix]
        assert (img.flatten(1) - torch.tensor(want)[:, None]).abs().max() <= 1, path
    data = load_imagefolder(tmp_path, img_size=8, val_fraction=0.34)
    assert data.train_x.shape[1:] == (3, 8, 8) and data.class_names == ("grey", "rgba")


def test_imagefolder_corrupt_file_is_named_in_one_line(tmp_path):
    _write_tiny(tmp_path, ["a", "b"], per_class=4)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DatasetError) as info:
        load_imagefolder(tmp_path, img_size=4)
    message = str(info.value)
    assert str(tmp_path / "b" / "broken.png") in message and "\n" not in message and "; " in message


def test_class_quotas_fill_small_classes_first():
    rng = np.random.default_rng(0)
    assert _class_quotas(np.array([2, 50, 50]), 30, rng).tolist() == [2, 14, 14]
    assert _class_quotas(np.array([2, 50, 50]), 500, rng).tolist() == [2, 50, 50]
    odd = [_class_quotas(np.array([2, 50, 50]), 31, np.random.default_rng(s)).tolist() for s in range(20)]
    assert {tuple(q) for q in odd} == {(2, 15, 14), (2, 14, 15)}  # the extra image goes to a random class


def test_check_dataset_is_quiet_for_good_data_and_decodes_nothing(tmp_path, monkeypatch):
    _write_tiny(tmp_path / "folder", ["a", "b"], per_class=2)
    _write_tiny(tmp_path / "split" / "train", ["a"], per_class=2)
    _write_tiny(tmp_path / "split" / "val", ["a"], per_class=2)
    _write_cifar(tmp_path / "cifar")
    _write_fashion(tmp_path / "fashion", [0, 1], [0, 1])
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("check_dataset decoded an image"))
    for name, path in [("synthetic", None), ("imagefolder", "folder"), ("imagefolder", "split"),
                       ("cifar10", "cifar"), ("fashion-mnist", "fashion")]:
        check_dataset(name, None if path is None else tmp_path / path)


def _write_cifar(root, n_per_batch=4, meta=True, cyclic_labels=False):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.arange(n_per_batch) % 10 if cyclic_labels else rng.integers(0, 10, n_per_batch)
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": labels.tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    if meta:
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)


def test_cifar10_from_folder_or_parent(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_cifar10(path)
        assert data.train_x.shape == (20, 3, 32, 32) and data.val_x.shape == (4, 3, 32, 32)
        assert data.num_classes == 10 and data.class_names[3] == "c3"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert data.train_y[4:8].tolist() == list(raw[b"labels"])


def test_cifar10_resize_and_subset(tmp_path):
    _write_cifar(tmp_path, meta=False)
    data = load_dataset("cifar10", tmp_path, img_size=16, max_train=7, max_val=3, seed=1)
    assert data.train_x.shape == (7, 3, 16, 16) and data.val_x.shape == (3, 3, 16, 16)
    assert data.class_names[0] == "airplane"


def test_cifar10_samples_are_class_balanced(tmp_path):
    _write_cifar(tmp_path, n_per_batch=10, cyclic_labels=True)  # 5 training images of each class, 1 test each
    data = load_dataset("cifar10", tmp_path, max_train=20, max_val=5, seed=3)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [2] * 10
    assert len(data.val_y) == 5 and len(set(data.val_y.tolist())) == 5


@pytest.mark.parametrize("call, fragment", [
    (lambda p: load_dataset("imagenet", p), "unknown dataset 'imagenet'"),
    (lambda p: load_dataset("imagefolder"), "needs --data-dir"),
    (lambda p: load_dataset("cifar10"), "needs --data-dir"),
    (lambda p: load_dataset("imagefolder", p / "nope"), "does not exist"),
    (lambda p: load_dataset("cifar10", p / "nope"), "does not exist"),
    (lambda p: load_dataset("imagefolder", p), "no images found"),
    (lambda p: load_dataset("cifar10", p), "data_batch_1, data_batch_2"),
    (lambda p: make_synthetic(10, 10, img_size=16), "too small"),
])
def test_dataset_errors_are_one_clear_line(tmp_path, call, fragment):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError) as info:
        call(tmp_path)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert ";" in message  # problem; fix


def _check_one_line(call, *fragments):
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert all(f in message for f in fragments), message
    assert "\n" not in message and "; " in message  # problem; fix
    return message


@pytest.mark.parametrize("name, setup, fragment", [
    ("imagenet", None, "unknown dataset 'imagenet'"),
    ("imagefolder", None, "needs --data-dir"),
    ("cifar10", None, "needs --data-dir"),
    ("imagefolder", "nope", "does not exist"),
    ("imagefolder", "", "no images found"),  # only an empty class folder
    ("cifar10", "", "data_batch_1, data_batch_2"),
    ("fashion-mnist", "", "sudo apt-get install dataset-fashion-mnist"),
])
def test_check_dataset_errors_match_loading(tmp_path, name, setup, fragment):
    (tmp_path / "empty_class").mkdir()
    data_dir = None if setup is None else tmp_path / setup
    checked = _check_one_line(lambda: check_dataset(name, data_dir), fragment)
    loaded = _check_one_line(lambda: load_dataset(name, data_dir), fragment)
    assert checked == loaded


def test_check_dataset_imagefolder_needs_images_in_both_splits(tmp_path):
    _write_tiny(tmp_path / "train", ["a"], per_class=2)
    (tmp_path / "val" / "a").mkdir(parents=True)
    _check_one_line(lambda: check_dataset("imagefolder", tmp_path), f"under {tmp_path / 'val'}")


# Fashion-MNIST: IDX files written by the tests, with an independent writer.

def _idx_bytes(values: np.ndarray) -> bytes:
    return bytes([0, 0, 8, values.ndim]) + b"".join(d.to_bytes(4, "big") for d in values.shape) + values.tobytes()


def _write_idx(path, values, gz):
    data = _idx_bytes(np.asarray(values, dtype=np.uint8))
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fashion_images(labels, size=28):
    """Image i is constant: 10 * label + i % 7 (known values for the checks)."""
    values = 10 * np.asarray(labels) + np.arange(len(labels)) % 7
    return np.repeat(values[:, None, None], size * size, axis=1).reshape(len(labels), size, size)


def _write_fashion(root, train_labels, test_labels, gz=True, train_images=None):
    root = Path(root)
    _write_idx(root / "train-images-idx3-ubyte", _fashion_images(train_labels) if train_images is None else train_images, gz)
    _write_idx(root / "train-labels-idx1-ubyte", train_labels, gz)
    _write_idx(root / "t10k-images-idx3-ubyte", _fashion_images(test_labels), gz)
    _write_idx(root / "t10k-labels-idx1-ubyte", test_labels, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_known_values(tmp_path, gz):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 7
    _write_idx(tmp_path / "img", images, gz)
    _write_idx(tmp_path / "lab", [3, 9, 0], gz)
    suffix = ".gz" if gz else ""
    got = read_idx(tmp_path / f"img{suffix}")
    assert got.dtype == np.uint8 and got.shape == (2, 3, 5) and np.array_equal(got, images)
    assert got[1, 2, 4] == (15 + 10 + 4) * 7 % 256
    assert read_idx(tmp_path / f"lab{suffix}").tolist() == [3, 9, 0]


def test_read_idx_agrees_with_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8), rng.integers(0, 10, 9, dtype=np.uint8)
    _write_idx(tmp_path / "img", images, gz=False)
    _write_idx(tmp_path / "lab", labels, gz=False)
    assert np.array_equal(read_image_file(str(tmp_path / "img")).numpy(), read_idx(tmp_path / "img"))
    assert np.array_equal(read_label_file(str(tmp_path / "lab")).numpy(), read_idx(tmp_path / "lab"))


@pytest.mark.parametrize("content, fragment", [
    (_idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], "holds 17 values where its header says 18"),
    (b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4, "not an IDX file of unsigned bytes"),
    (b"\x00\x00\x08\x03\x00", "ends inside its IDX header"),
    (gzip.compress(_idx_bytes(np.zeros((2, 3), np.uint8)))[:-12], "cannot read"),
])
def test_read_idx_rejects_broken_files_in_one_line(tmp_path, content, fragment):
    (tmp_path / "f").write_bytes(content)
    message = _check_one_line(lambda: read_idx(tmp_path / "f"), fragment)
    assert str(tmp_path / "f") in message


@pytest.mark.parametrize("layout, gz", [("flat", True), ("flat", False), ("torchvision", False)])
def test_fashion_mnist_layouts_and_pixel_values(tmp_path, layout, gz):
    train_labels, test_labels = np.arange(40) % 10, (np.arange(20) * 3) % 10
    _write_fashion(tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path,
                   train_labels, test_labels, gz=gz)
    data = load_fashion_mnist(tmp_path, img_size=28)
    assert data.train_x.shape == (40, 3, 28, 28) and data.val_x.shape == (20, 3, 28, 28)
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert data.train_y.tolist() == train_labels.tolist() and data.val_y.tolist() == test_labels.tolist()
    # Undo the standardisation with statistics computed from the values written: the pixels come back.
    train_pixels = _fashion_images(train_labels).astype(np.float64) / 255
    mean, std = train_pixels.mean(), train_pixels.std(ddof=1)
    restored = data.val_x.double() * std + mean
    assert torch.allclose(restored, torch.from_numpy(_fashion_images(test_labels) / 255)[:, None].expand(-1, 3, -1, -1),
                          atol=1e-5)


def test_fashion_mnist_resize_and_balanced_sample(tmp_path):
    train_labels = np.repeat(np.arange(10), [2, 50, 50, 50, 50, 50, 50, 50, 50, 50])
    images = np.zeros((len(train_labels), 28, 28), np.uint8)
    images[:, :, 14:] = 255  # left half black, right half white
    _write_fashion(tmp_path, train_labels, np.arange(30) % 10, train_images=images)
    data = load_fashion_mnist(tmp_path, img_size=14, max_train=92, max_val=10, seed=3)
    assert data.train_x.shape == (92, 3, 14, 14)
    assert torch.bincount(data.train_y).tolist() == [2] + [10] * 9  # the small class gives what it has
    assert torch.bincount(data.val_y).tolist() == [1] * 10
    img = data.train_x[0, 0]
    assert (img[:, :6] < 0).all() and (img[:, 8:] > 0).all()  # halves survive the antialiased resize
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey replicated
    again = load_dataset("fashion-mnist", tmp_path, img_size=14, max_train=92, max_val=10, seed=3)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.val_y, data.val_y)


def test_sources_check_dataset_fails_without_importing_torch(tmp_path):
    """The command line checks its data through trials.sources before anything imports torch (2 s)."""
    script = (
        "import sys\n"
        "from trials.sources import DatasetError, check_dataset\n"
        "for name in ('imagefolder', 'cifar10', 'fashion-mnist'):\n"
        "    try:\n"
        "        check_dataset(name, sys.argv[1])\n"
        "    except DatasetError as e:\n"
        "        print(name, 'DatasetError', e)\n"
        "print('heavy:', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'PIL'}))\n"
    )
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-c", script, str(missing)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "heavy: []", done.stdout
    assert lines[0].startswith("imagefolder DatasetError data directory") and f"{missing} does not exist" in lines[0]
    assert lines[1].startswith("cifar10 DatasetError data directory") and f"{missing} does not exist" in lines[1]
    assert lines[2].startswith(f"fashion-mnist DatasetError Fashion-MNIST not found in {missing}")
    assert len(lines) == 4, done.stdout


def test_fashion_mnist_missing_files_name_the_package(tmp_path):
    message = _check_one_line(lambda: load_fashion_mnist(tmp_path / "nowhere"),
                              f"Fashion-MNIST not found in {tmp_path / 'nowhere'}",
                              "sudo apt-get install dataset-fashion-mnist", "--data-dir")
    assert "(missing" not in message
    _write_fashion(tmp_path, [0, 1], [0, 1])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    _check_one_line(lambda: check_dataset("fashion-mnist", tmp_path), "missing t10k-labels-idx1-ubyte[.gz]",
                    "dataset-fashion-mnist")


def _fashion_installed() -> bool:
    try:
        check_dataset("fashion-mnist")
    except DatasetError:
        return False
    return True


# CI installs the package (.ci/run): there these tests run, and fail if it is missing
needs_fashion = pytest.mark.skipif(
    not _fashion_installed() and not os.environ.get("CI"),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} (sudo apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fashion_default():
    return load_dataset("fashion-mnist", max_train=3000, img_size=32, seed=0)


@needs_fashion
def test_real_fashion_mnist(fashion_default):
    data = fashion_default
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert data.train_x.shape == (3000, 3, 32, 32) and data.val_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [300] * 10
    assert torch.bincount(data.val_y).tolist() == [1000] * 10  # the published test set: 1,000 per class
    assert data.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    # Trousers (1) are narrow, bags (8) and pullovers (2) wide: mean brightness says so.
    brightness = [data.train_x[data.train_y == c].mean().item() for c in range(10)]
    assert brightness[1] < brightness[2] and brightness[1] < brightness[8]
    other = load_dataset("fashion-mnist", max_train=3000, max_val=100, img_size=32, seed=1)
    assert torch.bincount(other.train_y).tolist() == [300] * 10 and len(other.val_y) == 100
    assert not torch.equal(other.train_x[:50], data.train_x[:50])


@needs_fashion
def test_real_fashion_mnist_is_learnable_quickly(fashion_default):
    data = fashion_default
    keep = torch.cat([torch.nonzero(data.train_y == c)[:100, 0] for c in range(10)])
    small = TrialData("fashion-mnist", data.train_x[keep], data.train_y[keep], data.val_x[:2000], data.val_y[:2000],
                      10, data.class_names)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 10),
    )
    result = train_and_evaluate(model, small, ProxyConfig(epochs=2, batch_size=16, lr=2e-3))
    assert result.final_top1 > 55.0  # chance: 10%; 69-71% measured over 3 training seeds


def test_trial_data_pickles_its_images_out_of_band():
    """Protocol 5 hands the arrays over as buffers (what lets Ray's workers share one copy of the data in
    its object store); the round trip keeps every field."""
    data = make_synthetic(200, 50, seed=1)
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    image_bytes = data.train_x.numel() * 4 + data.val_x.numel() * 4
    assert len(payload) < 10_000 < image_bytes  # the images travel in the buffers, not in the pickle
    assert sum(memoryview(b).nbytes for b in buffers) >= image_bytes
    back = pickle.loads(payload, buffers=buffers)
    for field in dataclasses.fields(TrialData):
        a, b = getattr(data, field.name), getattr(back, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, field.name
    assert back.train_x.dtype == torch.float32 and back.train_y.dtype == torch.int64
