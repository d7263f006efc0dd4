import dataclasses
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from trials.data import (
    NUM_COARSE,
    NUM_TEXTURES,
    SYNTHETIC_NUM_CLASSES,
    DatasetError,
    _texture_bank,
    load_cifar10,
    load_dataset,
    load_imagefolder,
    make_synthetic,
    render_synthetic,
    sample_synthetic_latents,
)


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


def test_imagefolder_uses_train_val_subfolders(tmp_path):
    _write_pngs(tmp_path / "train", ["a", "b"], per_class=4)
    _write_pngs(tmp_path / "val", ["a", "b"], per_class=2)
    data = load_dataset("imagefolder", tmp_path, img_size=8, max_train=5)
    assert len(data.train_y) == 5 and len(data.val_y) == 4
    assert data.class_names == ("a", "b")


def _write_cifar(root, n_per_batch=4, meta=True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
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


@pytest.mark.parametrize("call, fragment", [
    (lambda p: load_dataset("imagenet", p), "unknown dataset 'imagenet'"),
    (lambda p: load_dataset("imagefolder"), "needs a data directory"),
    (lambda p: load_dataset("cifar10"), "needs a data directory"),
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
