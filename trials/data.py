"""Datasets for proxy trials, returned as in-memory tensors.

A trial trains for a few epochs on a few thousand small images, so every loader
materialises both splits as tensors up front: batches are then plain index
operations and the training loop needs no DataLoader workers.

``synthetic`` is generated here, deterministically from a seed. Its label
combines two factors that no single local patch provides:

* the sum of the values of two large striped squares (12x12 px at 32 px), one
  in the left half and one in the right half of the image. A square's value
  is its stripe orientation: horizontal 0, vertical 1, diagonal 2, so the sum
  takes 5 values (0..4). Reading it needs both halves of the image;
* an image-scale 2x2 checker in the background: negative, absent or positive
  (3 states), hidden locally by a random offset, tint and gradient.

``label = 3 * sum + coarse`` gives 15 balanced classes, plus a few coloured
distractor strokes and pixel noise. The squares span 3x3 cells of a stride-4
stem's map and their stripes (period 4 px) survive a 4x4 patchify, so a
4-epoch proxy at 32 px can learn the task, but how far it gets within those
epochs depends strongly on the architecture and is a sharp take-off (measured
with the search's default proxy, 3000 images, 4 epochs, mean of 3 training
seeds: van_b2 52%, van_b0 44%, pelk_t 27%, coatnet_0 25% (9-35%), smt_t 21%;
chance 6.7%, coarse factor alone 20%; a near copy with other nuisance draws
took smt_t to 99%). See benchmarks/seed_separation.py.

``imagefolder``, ``cifar10`` and ``fashion-mnist`` are read from disk, never
downloaded. Samples are seeded and class-balanced, and an image folder is only
listed before its sample is drawn, so loading costs the same for 10,000 or
1.28M files (benchmarks/folder_loading.py).

Where a dataset's files are and whether they are there (names, folders, ``check_dataset``) lives in
`trials.sources`, which does not import torch, so that a command checks its data in milliseconds
instead of first paying torch's 2 s import; the public names that moved are re-exported here.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import pickle
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trials.sources import (
    _CIFAR_BATCHES,
    DATASET_NAMES,
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_SAMPLES,
    FASHION_MNIST_DIR,
    IMAGE_EXTENSIONS,
    REAL_DATA_SAMPLES,
    DatasetError,
    _cifar_dir,
    _fashion_mnist_files,
    _imagefolder_roots,
    _list_folder,
    _no_images_error,
    _require_dir,
    check_dataset,
    default_samples,
)

__all__ = [
    "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "NUM_COARSE", "NUM_SUMS", "NUM_TEXTURES", "SYNTHETIC_CLASSES",
    "SYNTHETIC_NUM_CLASSES", "SyntheticLatents", "TrialData", "load_cifar10", "load_dataset",
    "load_fashion_mnist", "load_imagefolder", "make_synthetic", "read_idx", "render_synthetic",
    "sample_synthetic_latents",
    # Defined in trials.sources, re-exported for callers that import them from here:
    "DATASET_NAMES", "DEFAULT_MIN_PER_CLASS", "DEFAULT_SAMPLES", "FASHION_MNIST_DIR", "IMAGE_EXTENSIONS",
    "REAL_DATA_SAMPLES", "DatasetError", "check_dataset", "default_samples",
]

_logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

NUM_TEXTURES = 3  # stripe orientation of a square: horizontal, vertical, diagonal
NUM_SUMS = 2 * (NUM_TEXTURES - 1) + 1  # value of the left square + value of the right one
NUM_COARSE = 3  # image-scale checker: negative, absent, positive
SYNTHETIC_NUM_CLASSES = NUM_SUMS * NUM_COARSE
SYNTHETIC_CLASSES = tuple(
    f"sum{total}-{coarse}"
    for total in range(NUM_SUMS)
    for coarse in ("neg", "flat", "pos")
)

# Amplitudes in units of the pixel-noise std, before standardisation.
_CHECKER_AMP = 0.6
_OFFSET_AMP = 1.0
_GRADIENT_AMP = 0.8
_DISTRACTOR_AMP = (0.5, 1.0)
_NUM_DISTRACTORS = 2  # per 32x32 area
_MOTIF_AMP = 3.0
_MOTIF_SIZE = 12  # side of a striped square at 32 px
_NOISE_STD = 0.3
# Near-white tints of the squares (one drawn per square): colour is nuisance, not label.
_TINTS = np.array([[1.2, 0.9, 0.9], [0.9, 1.2, 0.9], [0.9, 0.9, 1.2]], dtype=np.float32)


@dataclass
class TrialData:
    """Both splits of a dataset as tensors: images float32 NCHW, labels int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None = None

    @property
    def img_size(self) -> int:
        return self.train_x.shape[-1]

    def __reduce__(self) -> tuple:
        # Pickled as numpy arrays: Ray keeps those in its object store and every worker maps the one copy
        # (zero-copy, read only), where pickled tensors would be copied into each worker.
        arrays = tuple(t.numpy() for t in (self.train_x, self.train_y, self.val_x, self.val_y))
        return _trial_data_from_arrays, (self.name, *arrays, self.num_classes, self.class_names)


def _trial_data_from_arrays(name: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                            val_y: np.ndarray, num_classes: int, class_names: tuple[str, ...] | None) -> TrialData:
    with warnings.catch_warnings():  # Ray's zero-copy arrays are read only; the trials only read them
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        tensors = [torch.from_numpy(a) for a in (train_x, train_y, val_x, val_y)]
    return TrialData(name, *tensors, num_classes, class_names)


@dataclass
class SyntheticLatents:
    """Everything that decides a synthetic label; the label is derived, never stored.

    Kept apart from the nuisance (noise, distractors, tint) so a test can render
    two images that differ in a single factor.
    """

    coarse: np.ndarray  # (N,) 0/1/2: image-scale checker negative / absent / positive
    value_a: np.ndarray  # (N,) stripe orientation (0/1/2) of the left square
    value_b: np.ndarray  # (N,) stripe orientation of the right square
    pos_a: np.ndarray  # (N, 2) top-left (y, x) of the left square
    pos_b: np.ndarray  # (N, 2) top-left (y, x) of the right square

    def labels(self) -> np.ndarray:
        return (NUM_COARSE * (self.value_a + self.value_b) + self.coarse).astype(np.int64)


def _texture_bank(scale: int) -> np.ndarray:
    """(3, 12*scale, 12*scale) masks: horizontal, vertical and diagonal stripes of period 4*scale."""
    i = np.arange(_MOTIF_SIZE)
    horizontal = np.broadcast_to((i[:, None] // 2) % 2 == 0, (_MOTIF_SIZE, _MOTIF_SIZE))
    diagonal = ((i[:, None] + i[None, :]) // 2) % 2 == 0
    bank = np.stack([horizontal, horizontal.T, diagonal]).astype(np.float32)
    return np.kron(bank, np.ones((scale, scale), dtype=np.float32))


def _motif_scale(img_size: int) -> int:
    return max(1, img_size // 32)


def sample_synthetic_latents(n: int, img_size: int, rng: np.random.Generator) -> SyntheticLatents:
    """Sample label-relevant factors with exactly balanced labels (up to n % classes)."""
    labels = rng.permutation(np.arange(n) % SYNTHETIC_NUM_CLASSES)
    total, coarse = labels // NUM_COARSE, labels % NUM_COARSE
    # Left value uniform among those that can reach the sum, the right one makes it up.
    lo = np.maximum(0, total - (NUM_TEXTURES - 1))
    hi = np.minimum(NUM_TEXTURES - 1, total)
    value_a = lo + (rng.random(n) * (hi - lo + 1)).astype(np.int64)
    value_b = total - value_a

    # Left square inside the left half, right square inside the right half.
    g = _MOTIF_SIZE * _motif_scale(img_size)
    half = img_size // 2
    x_a = rng.integers(0, half - g + 1, n)
    x_b = rng.integers(half, img_size - g + 1, n)
    y_a = rng.integers(0, img_size - g + 1, n)
    y_b = rng.integers(0, img_size - g + 1, n)
    return SyntheticLatents(
        coarse=coarse, value_a=value_a, value_b=value_b,
        pos_a=np.stack([y_a, x_a], 1), pos_b=np.stack([y_b, x_b], 1),
    )


def render_synthetic(
        latents: SyntheticLatents, img_size: int, rng: np.random.Generator,
) -> np.ndarray:
    """Render (N, 3, R, R) float32 images; all nuisance is drawn from rng."""
    n, r = len(latents.coarse), img_size
    scale = _motif_scale(r)
    idx = np.arange(n)[:, None, None]

    # Image-scale 2x2 checker with soft edges: negative, absent or positive.
    prof = np.tanh((np.arange(r) + 0.5 - r / 2) / (r / 8))
    sign = latents.coarse - 1.0
    tint = rng.uniform(0.5, 1.0, (n, 1, 1, 3))
    img = (_CHECKER_AMP * sign[:, None, None, None] * tint) * np.outer(prof, prof)[None, :, :, None]

    # Nuisance: per-channel offset and a random linear gradient, so the brightness of
    # one quadrant says little about the checker sign.
    img = img + rng.uniform(-_OFFSET_AMP, _OFFSET_AMP, (n, 1, 1, 3))
    theta = rng.uniform(0, 2 * np.pi, n)
    coord = (np.arange(r) + 0.5 - r / 2) / (r / 2)
    ramp = np.cos(theta)[:, None, None] * coord[None, None, :]
    ramp = ramp + np.sin(theta)[:, None, None] * coord[None, :, None]
    img = img + (rng.uniform(0, _GRADIENT_AMP, n)[:, None, None] * ramp)[..., None]

    # Distractors: random 3x3 strokes in a single colour channel, anywhere.
    p = 3 * scale
    for _ in range(max(_NUM_DISTRACTORS, round(_NUM_DISTRACTORS * (r / 32) ** 2))):
        mask = np.kron(rng.random((n, 3, 3)) < 0.5, np.ones((scale, scale)))
        amp = rng.uniform(*_DISTRACTOR_AMP, n) * rng.choice([-1.0, 1.0], n)
        y = rng.integers(0, r - p + 1, n)[:, None, None] + np.arange(p)[None, :, None]
        x = rng.integers(0, r - p + 1, n)[:, None, None] + np.arange(p)[None, None, :]
        ch = rng.integers(0, 3, n)[:, None, None]
        img[idx, y, x, ch] += amp[:, None, None] * mask

    # The two striped squares, bright in all channels with a random tint and gain.
    bank = _texture_bank(scale)
    g = bank.shape[-1]
    ar = np.arange(g)
    for value, pos in (
            (latents.value_a, latents.pos_a),
            (latents.value_b, latents.pos_b),
    ):
        colour = _TINTS[rng.integers(0, len(_TINTS), n)] * rng.uniform(0.8, 1.2, (n, 1))
        y = pos[:, 0, None, None] + ar[None, :, None]
        x = pos[:, 1, None, None] + ar[None, None, :]
        img[idx, y, x, :] += _MOTIF_AMP * bank[value][..., None] * colour[:, None, None, :]

    img = img + rng.normal(0.0, _NOISE_STD, img.shape)
    return np.ascontiguousarray(img.transpose(0, 3, 1, 2), dtype=np.float32)


def make_synthetic(
        num_train: int = 4000,
        num_val: int = 1000,
        img_size: int = 32,
        seed: int = 0,
) -> TrialData:
    """Generate the synthetic dataset; the same arguments give identical tensors.

    Train and val images come from independent streams of the seed, so the val
    images do not depend on num_train (their normalisation uses train statistics).
    """
    if img_size < 2 * _MOTIF_SIZE:
        raise DatasetError(
            f"synthetic img_size={img_size} is too small; use img_size >= {2 * _MOTIF_SIZE}"
        )
    splits = []
    for split_id, n in enumerate((num_train, num_val)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_id]))
        latents = sample_synthetic_latents(n, img_size, rng)
        x = render_synthetic(latents, img_size, rng)
        splits.append((torch.from_numpy(x), torch.from_numpy(latents.labels())))
    (train_x, train_y), (val_x, val_y) = splits
    return _standardised(TrialData(
        "synthetic", train_x, train_y, val_x, val_y, SYNTHETIC_NUM_CLASSES, SYNTHETIC_CLASSES,
    ))


def _standardised(data: TrialData) -> TrialData:
    """Normalise both splits per channel with train statistics (zero mean, unit std)."""
    mean = data.train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = data.train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    data.train_x = ((data.train_x - mean) / std).contiguous()
    data.val_x = ((data.val_x - mean) / std).contiguous()
    return data


def _seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """One independent random stream of a seed per purpose, so that e.g. the val sample does not move when
    max_train changes."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


# Streams of _seeded_rng for the real datasets.
_STREAM_HOLDOUT, _STREAM_CLASSES, _STREAM_TRAIN, _STREAM_VAL = range(4)


def _class_quotas(counts: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class sample sizes summing to min(limit, total), as equal as the class sizes allow.

    Water-filling: every class gets min(count, q) for the largest q that fits; the few left over go one
    each to randomly drawn classes that still have images, so no class is favoured by its name or index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if limit >= counts.sum():
        return counts.copy()
    lo, hi = 0, int(counts.max())  # sum(min(counts, lo)) <= limit < sum(min(counts, hi))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if np.minimum(counts, mid).sum() <= limit:
            lo = mid
        else:
            hi = mid
    quota = np.minimum(counts, lo)
    extra = limit - int(quota.sum())
    if extra:
        quota[rng.choice(np.flatnonzero(counts > lo), extra, replace=False)] += 1
    return quota


def _balanced_sample(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced sample of at most limit items (all of them if None)."""
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    quota = _class_quotas(counts, limit, rng)
    picks = [order[s + rng.choice(c, q, replace=False)] for s, c, q in zip(starts, counts, quota)]
    return np.sort(np.concatenate(picks))


def _choose_classes(
        train_counts: np.ndarray, max_train: int | None, min_per_class: int, rng: np.random.Generator,
) -> np.ndarray:
    """Indices of the classes to keep: all of them, or a seeded subset when max_train spread over every class
    would give each fewer than min_per_class training images (classes with enough images drawn first)."""
    n = len(train_counts)
    if max_train is None or min_per_class <= 0 or max_train >= min(min_per_class * n, int(train_counts.sum())):
        return np.arange(n)
    k = min(n, max(2, max_train // min_per_class))
    order = rng.permutation(n)
    order = order[np.argsort(train_counts[order] < min_per_class, kind="stable")]
    return np.sort(order[:k])


def _pick(names: list[str], quota: int, rng: np.random.Generator) -> list[str]:
    if quota >= len(names):
        return names
    return [names[i] for i in np.sort(rng.choice(len(names), quota, replace=False))]


def _sample_listing(
        pools: list[list[str]], limit: int | None, rng: np.random.Generator,
) -> list[list[str]]:
    """A class-balanced, seeded sample of at most limit file names from per-class pools."""
    if limit is None:
        return pools
    quotas = _class_quotas(np.array([len(p) for p in pools], dtype=np.int64), limit, rng)
    return [_pick(p, int(q), rng) for p, q in zip(pools, quotas)]


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _decode_image(path: str, img_size: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB of one file: grey, palette and RGBA files converted, squashed to a square."""
    try:
        with Image.open(path) as img:
            # JPEG: libjpeg shrinks by up to 8x inside the DCT (a no-op for other formats); keeping twice the
            # target size leaves the final antialiased resize to PIL.
            img.draft("RGB", (2 * img_size, 2 * img_size))
            img = img.convert("RGB")
            if img.size != (img_size, img_size):
                img = img.resize((img_size, img_size), Image.Resampling.BILINEAR)
            return np.asarray(img)
    except Exception as e:  # whatever the decoder raises, the user needs the file's name
        raise DatasetError(f"cannot read image {path} ({_one_line(e)}); replace or remove the file") from e


def _decode_chunk(paths: list[str], img_size: int) -> np.ndarray:
    return np.stack([_decode_image(p, img_size) for p in paths])


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_DECODE_CHUNK = 64


def _decode_images(paths: list[str], img_size: int, workers: int | None = None) -> torch.Tensor:
    """Decode the files into one preallocated (N, 3, S, S) uint8 tensor: memory scales with the sample.

    Threads, not processes: PIL releases the GIL while it decodes and resizes, and nothing is pickled or
    forked. Measured on the 2-core machine (shared, load ~3), medians of 5: 4,000 64x64 JPEGs to 32 px in
    0.87 s with 2 threads, 0.89 s with 4, 1.33 s serial, 1.48 s with 2 forked processes; 1,500 500x375
    JPEGs in 1.71 s, 1.72 s, 1.87 s and 2.01 s.
    """
    out = torch.empty((len(paths), 3, img_size, img_size), dtype=torch.uint8)
    chunks = [(i, paths[i:i + _DECODE_CHUNK]) for i in range(0, len(paths), _DECODE_CHUNK)]
    workers = min(_default_workers() if workers is None else workers, len(chunks))

    def decode(start: int, chunk: list[str]) -> None:
        out[start:start + len(chunk)] = torch.from_numpy(_decode_chunk(chunk, img_size)).permute(0, 3, 1, 2)

    if workers <= 1:
        for start, chunk in chunks:
            decode(start, chunk)
        return out
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(decode, start, chunk) for start, chunk in chunks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return out


def load_imagefolder(
        data_dir: str | Path,
        img_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
        min_per_class: int = DEFAULT_MIN_PER_CLASS,
        workers: int | None = None,
) -> TrialData:
    """Load a seeded, class-balanced sample of class-per-folder images, resized to img_size x img_size.

    Uses ``train/`` and ``val/`` sub-folders when both exist, otherwise holds val_fraction of every class
    of ``data_dir`` out for val. The folder is only listed (file names); max_train / max_val images are
    drawn before anything is decoded, so time and memory scale with the sample, not with the folder
    (ImageNet's 1.28M images included). Only the sample is decoded, by ``workers`` threads (default: one
    per available core), into one uint8 tensor.

    When max_train spread over all classes gives fewer than min_per_class training images each, a seeded
    subset of max_train // min_per_class classes is kept (labels re-indexed 0..k-1 in name order,
    class_names those kept, val drawn from the same classes); min_per_class=0 keeps every class. Why 30:
    on Fashion-MNIST with the proxy's step budget (3,000 images x 4 epochs, 3 small models, 4 draws of the
    images), the models' order held in every draw from 30 images per class up, not at 20 or 10, where which
    images were drawn moved a model by up to 5-7 points, more than the models differ. With the default
    3,000 training images that keeps at most 100 classes (of ImageNet's 1,000).

    A file that cannot be decoded raises a one-line DatasetError naming it: the data is the user's and a
    silently smaller sample would bias the proxy.
    """
    root = _require_dir(data_dir, "imagefolder")
    train_root, val_root = _imagefolder_roots(root)
    listing = _list_folder(train_root)
    if not listing:
        raise _no_images_error(train_root)
    names = list(listing)
    pools = [listing[c] for c in names]
    if val_root is None:
        holdout = _seeded_rng(seed, _STREAM_HOLDOUT)
        train_pools, val_pools = [], []
        for files in pools:
            n_val = int(round(len(files) * val_fraction)) if len(files) > 1 else 0
            perm = holdout.permutation(len(files))
            val_pools.append([files[i] for i in np.sort(perm[:n_val])])
            train_pools.append([files[i] for i in np.sort(perm[n_val:])])
    else:
        val_listing = _list_folder(val_root)
        unknown = sorted(set(val_listing) - set(listing))
        if unknown:
            _logger.warning("imagefolder %s: val classes without training images ignored: %s",
                            val_root, ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
        train_pools, val_pools = pools, [val_listing.get(c, []) for c in names]
    del listing, pools

    keep = _choose_classes(np.array([len(p) for p in train_pools]), max_train, min_per_class,
                           _seeded_rng(seed, _STREAM_CLASSES))
    if len(keep) < len(names):
        _logger.info("imagefolder %s: %d of %d classes kept (seeded) so that each gets at least %d of the %d "
                     "training images (min_per_class)", root, len(keep), len(names), min_per_class, max_train)
    names = [names[i] for i in keep]
    train_pick = _sample_listing([train_pools[i] for i in keep], max_train, _seeded_rng(seed, _STREAM_TRAIN))
    val_pick = _sample_listing([val_pools[i] for i in keep], max_val, _seeded_rng(seed, _STREAM_VAL))
    del train_pools, val_pools
    if not any(val_pick):
        raise DatasetError(f"no validation images in {root}; add a val/ folder or more images per class")

    splits = []
    for split_root, picked in ((train_root, train_pick), (val_root or train_root, val_pick)):
        paths = [os.path.join(split_root, c, f) for c, files in zip(names, picked) for f in files]
        labels = torch.repeat_interleave(torch.arange(len(names)), torch.tensor([len(f) for f in picked]))
        splits.append((_decode_images(paths, img_size, workers).float().div_(255.0), labels))
    (train_x, train_y), (val_x, val_y) = splits
    _logger.info("imagefolder %s: %d train, %d val, %d classes", root, len(train_y), len(val_y), len(names))
    return _standardised(TrialData("imagefolder", train_x, train_y, val_x, val_y, len(names), tuple(names)))


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(x.copy()), torch.tensor(batch[b"labels"], dtype=torch.int64)


def load_cifar10(
        data_dir: str | Path,
        img_size: int = 32,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
) -> TrialData:
    """Load CIFAR-10 from the python batches on disk (never downloads).

    data_dir is either ``cifar-10-batches-py`` or the folder that contains it.
    The official test batch is the val split; max_train / max_val draw seeded, class-balanced samples
    as for the other real datasets.
    """
    root = _cifar_dir(_require_dir(data_dir, "cifar10"))
    batches = [_read_cifar_batch(root / n) for n in _CIFAR_BATCHES]
    train_x = torch.cat([b[0] for b in batches[:-1]])
    train_y = torch.cat([b[1] for b in batches[:-1]])
    val_x, val_y = batches[-1]
    train = _balanced_sample(train_y.numpy(), max_train, _seeded_rng(seed, _STREAM_TRAIN))
    val = _balanced_sample(val_y.numpy(), max_val, _seeded_rng(seed, _STREAM_VAL))
    train_x, train_y = _as_float_images(train_x[train], img_size), train_y[train]
    val_x, val_y = _as_float_images(val_x[val], img_size), val_y[val]
    return _standardised(TrialData("cifar10", train_x, train_y, val_x, val_y, 10, _cifar_names(root)))


def _cifar_names(root: Path) -> tuple[str, ...]:
    meta = root / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    with open(meta, "rb") as f:
        return tuple(n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"])


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), gzipped or not, as a read-only uint8 array.

    Why not torchvision's reader: ``torchvision.datasets.mnist.read_image_file`` opens its path as a plain
    file, so the gzipped files Debian installs (read-only, under /usr/share) would have to be decompressed
    to a writable cache first, and it checks the header with asserts. This reads .gz in place (detected by
    its magic bytes, not the name), checks the header against the file's length and names the file in a
    one-line DatasetError. Format: 0, 0, type 0x08 (unsigned byte), number of dimensions, then one
    big-endian uint32 per dimension (magic 2051 = 3-D images, 2049 = 1-D labels), then the values.
    """
    path = Path(path)
    fix = "replace it with the original file"
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read {path} ({_one_line(e)}); {fix}") from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] == 0:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (magic {int.from_bytes(data[:4], 'big')}, "
                           f"expected 2049 or 2051); {fix}")
    offset = 4 + 4 * data[3]
    if len(data) < offset:
        raise DatasetError(f"{path} ends inside its IDX header; {fix}")
    shape = struct.unpack(f">{data[3]}I", data[4:offset])
    if len(data) - offset != math.prod(shape):
        raise DatasetError(f"{path} holds {len(data) - offset} values where its header says {math.prod(shape)} "
                           f"{shape}; {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _as_float_images(x: torch.Tensor, img_size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float in [0, 1] at img_size x img_size (bilinear, antialiased)."""
    t = x.float().div_(255.0)
    if t.shape[-2:] != (img_size, img_size):
        t = torch.nn.functional.interpolate(t, size=(img_size, img_size), mode="bilinear", antialias=True,
                                            align_corners=False)
    return t


def load_fashion_mnist(
        data_dir: str | Path | None = None,
        img_size: int = 32,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
) -> TrialData:
    """Load Fashion-MNIST from its four IDX files (by default where Debian's dataset-fashion-mnist puts them).

    The 10,000 test images are the val split. max_train / max_val draw a seeded sample with equal counts
    per class (3,000 training images: 300 of each of the 10 classes). The 28x28 grey images are resized to
    img_size and replicated to 3 channels, so every architecture takes them unchanged.
    """
    paths = _fashion_mnist_files(data_dir)
    splits = []
    for x_path, y_path, limit, stream in ((*paths[:2], max_train, _STREAM_TRAIN),
                                          (*paths[2:], max_val, _STREAM_VAL)):
        x, y = read_idx(x_path), read_idx(y_path)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (len(y) and y.max() >= len(FASHION_MNIST_CLASSES)):
            raise DatasetError(f"{x_path} and {y_path} are not a Fashion-MNIST image/label pair (shapes {x.shape}, "
                               f"{y.shape}); replace them with the original files")
        keep = _balanced_sample(y, limit, _seeded_rng(seed, stream))
        grey = _as_float_images(torch.from_numpy(x[keep]).unsqueeze(1), img_size)
        splits.append((grey.expand(-1, 3, -1, -1), torch.from_numpy(y[keep].astype(np.int64))))
    (train_x, train_y), (val_x, val_y) = splits
    _logger.info("fashion-mnist %s: %d train, %d val", paths[0].parent, len(train_y), len(val_y))
    return _standardised(TrialData("fashion-mnist", train_x, train_y, val_x, val_y,
                                   len(FASHION_MNIST_CLASSES), FASHION_MNIST_CLASSES))


def load_dataset(
        name: str,
        data_dir: str | Path | None = None,
        img_size: int = 32,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
        min_per_class: int = DEFAULT_MIN_PER_CLASS,
) -> TrialData:
    """Load a dataset by name: "synthetic", "imagefolder", "cifar10" or "fashion-mnist".

    For "synthetic", max_train/max_val are the generated split sizes (defaults
    4000/1000); for the others they cap a deterministic random subset.
    min_per_class applies to "imagefolder" (see load_imagefolder). "fashion-mnist"
    reads FASHION_MNIST_DIR when data_dir is None.
    """
    if name == "synthetic":
        return make_synthetic(
            num_train=4000 if max_train is None else max_train,
            num_val=1000 if max_val is None else max_val,
            img_size=img_size, seed=seed,
        )
    if name == "imagefolder":
        return load_imagefolder(
            _require_dir(data_dir, name), img_size=img_size, seed=seed,
            max_train=max_train, max_val=max_val, min_per_class=min_per_class,
        )
    if name == "cifar10":
        return load_cifar10(
            _require_dir(data_dir, name), img_size=img_size, seed=seed,
            max_train=max_train, max_val=max_val,
        )
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, img_size=img_size, seed=seed, max_train=max_train, max_val=max_val)
    raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
