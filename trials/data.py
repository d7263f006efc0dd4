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
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset

_logger = logging.getLogger(__name__)

DATASET_NAMES = ("synthetic", "imagefolder", "cifar10")

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


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message names the problem and the fix."""


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


def _subset(
        x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic random subset of at most limit samples (all of them if None)."""
    if limit is None or limit >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
    keep = keep.sort().values
    return x[keep], y[keep]


def _to_uint8_tensor(img: Image.Image, img_size: int) -> torch.Tensor:
    img = img.resize((img_size, img_size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _materialise(dataset: ImageDataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i in indices:
        x, y = dataset[i]
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).float().div_(255.0), torch.tensor(ys, dtype=torch.int64)


def _image_dataset(root: Path, img_size: int, class_map: dict[str, int] | None = None) -> ImageDataset:
    try:
        return ImageDataset(
            str(root), class_map=class_map,
            transform=lambda img: _to_uint8_tensor(img, img_size),
        )
    except RuntimeError as e:
        raise DatasetError(
            f"no images found under {root}; put .png/.jpg/.jpeg files in one sub-folder per class"
        ) from e


def _stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices so every class keeps about val_fraction of its images for val."""
    rng = np.random.default_rng(seed)
    labels_np = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels_np):
        members = rng.permutation(np.flatnonzero(labels_np == c))
        n_val = int(round(len(members) * val_fraction)) if len(members) > 1 else 0
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def _require_dir(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"dataset '{name}' needs a data directory; pass data_dir=<path>")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data directory {path} does not exist; check the path passed as data_dir")
    return path


def load_imagefolder(
        data_dir: str | Path,
        img_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
) -> TrialData:
    """Load class-per-folder images, resized to img_size x img_size.

    Uses ``train/`` and ``val/`` sub-folders when both exist, otherwise a
    deterministic per-class split of ``data_dir`` with val_fraction held out.
    """
    root = _require_dir(data_dir, "imagefolder")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_ds = _image_dataset(root / "train", img_size)
        class_to_idx = train_ds.reader.class_to_idx
        val_ds = _image_dataset(root / "val", img_size, class_map=class_to_idx)
        train_x, train_y = _materialise(train_ds, list(range(len(train_ds))))
        val_x, val_y = _materialise(val_ds, list(range(len(val_ds))))
    else:
        ds = _image_dataset(root, img_size)
        class_to_idx = ds.reader.class_to_idx
        train_idx, val_idx = _stratified_split([t for _, t in ds.reader.samples], val_fraction, seed)
        train_x, train_y = _materialise(ds, train_idx)
        val_x, val_y = _materialise(ds, val_idx)
    if len(val_y) == 0:
        raise DatasetError(f"no validation images in {root}; add a val/ folder or more images per class")
    train_x, train_y = _subset(train_x, train_y, max_train, seed)
    val_x, val_y = _subset(val_x, val_y, max_val, seed + 1)
    names = tuple(sorted(class_to_idx, key=class_to_idx.get))
    _logger.info("imagefolder %s: %d train, %d val, %d classes", root, len(train_y), len(val_y), len(names))
    return _standardised(TrialData("imagefolder", train_x, train_y, val_x, val_y, len(names), names))


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
    The official test batch is the val split.
    """
    root = _require_dir(data_dir, "cifar10")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10 batch files missing in {root}: {', '.join(missing)}; "
            "extract cifar-10-python.tar.gz there (no download is attempted)"
        )
    batches = [_read_cifar_batch(root / n) for n in names]
    train_x = torch.cat([b[0] for b in batches[:-1]])
    train_y = torch.cat([b[1] for b in batches[:-1]])
    val_x, val_y = batches[-1]
    train_x, train_y = _subset(train_x, train_y, max_train, seed)
    val_x, val_y = _subset(val_x, val_y, max_val, seed + 1)
    train_x, val_x = train_x.float().div_(255.0), val_x.float().div_(255.0)
    if img_size != 32:
        resize = dict(size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False)
        train_x = torch.nn.functional.interpolate(train_x, **resize)
        val_x = torch.nn.functional.interpolate(val_x, **resize)
    return _standardised(TrialData("cifar10", train_x, train_y, val_x, val_y, 10, _cifar_names(root)))


def _cifar_names(root: Path) -> tuple[str, ...]:
    meta = root / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    with open(meta, "rb") as f:
        return tuple(n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"])


def load_dataset(
        name: str,
        data_dir: str | Path | None = None,
        img_size: int = 32,
        seed: int = 0,
        max_train: int | None = None,
        max_val: int | None = None,
) -> TrialData:
    """Load a dataset by name: "synthetic", "imagefolder" or "cifar10".

    For "synthetic", max_train/max_val are the generated split sizes (defaults
    4000/1000); for the others they cap a deterministic random subset.
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
            max_train=max_train, max_val=max_val,
        )
    if name == "cifar10":
        return load_cifar10(
            _require_dir(data_dir, name), img_size=img_size, seed=seed,
            max_train=max_train, max_val=max_val,
        )
    raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
