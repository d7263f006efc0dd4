"""Where a dataset's files are and whether they are there: dataset names, default sample sizes, folders
and file names, never pixels.

Split from `trials.data` (which decodes images into torch tensors) so that a command checks its data in
milliseconds without importing torch (about 2 s) or PIL: this module imports only the standard library.
`trials.data` imports what it needs from here and re-exports the public names.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DATASET_NAMES", "DEFAULT_MIN_PER_CLASS", "DEFAULT_SAMPLES", "FASHION_MNIST_DIR", "IMAGE_EXTENSIONS",
    "REAL_DATA_SAMPLES", "DatasetError", "check_dataset", "default_samples",
]

DATASET_NAMES = ("synthetic", "imagefolder", "cifar10", "fashion-mnist")

# Images a proxy trains and validates on by default: (train, val). The synthetic set is generated at the
# size its take-off behaviour was tuned for (benchmarks/seed_separation.py). On real data the proxy is
# data-bound: on Fashion-MNIST at 600 MFLOPs, 3,000 images x 4 epochs held the seeds at 84% at most, and at
# equal compute 12,000 x 1 beat 6,000 x 2 beat 3,000 x 4; 10,000 x 4 (3.3x the compute) reached 86-88%
# (benchmarks/README.md). Validation: Fashion-MNIST's whole test set; elsewhere as many (binomial noise
# about 0.35 points against 1.1 for 1,000 images).
DEFAULT_SAMPLES = {"synthetic": (3000, 1000)}
REAL_DATA_SAMPLES = (10_000, 10_000)


def default_samples(name: str) -> tuple[int, int]:
    """The (train, val) image counts a proxy uses on dataset `name` unless told otherwise."""
    return DEFAULT_SAMPLES.get(name, REAL_DATA_SAMPLES)


IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})  # compared lower-cased
DEFAULT_MIN_PER_CLASS = 30  # imagefolder: fewest training images per class before classes are subset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message names the problem and the fix."""


def _require_dir(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"--dataset {name} needs --data-dir PATH (data_dir= from Python), as it is never "
                           "downloaded; point it at the dataset's folder")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data directory {path} does not exist; check the path passed as data_dir")
    return path


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_dirs(root: Path) -> list[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _image_names(folder: Path) -> list[str]:
    """Image file names in folder, sorted so that a seed picks the same files on every file system."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _is_image_name(e.name) and e.is_file())


def _list_folder(root: Path) -> dict[str, list[str]]:
    """Class name -> image file names, for every class sub-folder of root that holds images.

    Names only: no stat of the files and nothing decoded, so that listing ImageNet's 1.28M files costs
    seconds and its memory (the name strings) is freed once the sample is drawn.
    """
    listing = {}
    for name in _class_dirs(root):
        files = _image_names(root / name)
        if files:
            listing[name] = files
    return listing


def _no_images_error(root: Path) -> DatasetError:
    exts = "/".join(sorted(IMAGE_EXTENSIONS))
    return DatasetError(f"no images found in class folders under {root}; put {exts} files in one sub-folder per class")


def _imagefolder_roots(root: Path) -> tuple[Path, Path | None]:
    """(train root, val root or None): train/ and val/ when both exist, else root itself."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root / "train", root / "val"
    return root, None


def _has_class_with_image(root: Path) -> bool:
    """Whether some class folder of root holds an image; stops at the first one found (cheap on ImageNet)."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            with os.scandir(entry.path) as files:
                if any(_is_image_name(f.name) and f.is_file() for f in files):
                    return True
    return False


_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _cifar_dir(root: Path) -> Path:
    """The folder holding the batch files (root or its cifar-10-batches-py); DatasetError if any is missing."""
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [n for n in _CIFAR_BATCHES if not (root / n).is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10 batch files missing in {root}: {', '.join(missing)}; "
            "extract cifar-10-python.tar.gz there (no download is attempted)"
        )
    return root


def _fashion_mnist_files(data_dir: str | Path | None) -> list[Path]:
    """The four IDX files (train images, train labels, test images, test labels), each gzipped or not, directly
    in data_dir or in torchvision's layout data_dir/FashionMNIST/raw; one-line DatasetError if any is missing."""
    root = FASHION_MNIST_DIR if data_dir is None else Path(data_dir).expanduser()
    found, missing = [], []
    for stem in _FASHION_MNIST_FILES:
        candidates = [folder / name for folder in (root, root / "FashionMNIST" / "raw")
                      for name in (stem, stem + ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(stem + "[.gz]")
        else:
            found.append(path)
    if missing:
        what = "" if len(missing) == len(_FASHION_MNIST_FILES) else f" (missing {', '.join(missing)})"
        raise DatasetError(
            f"Fashion-MNIST not found in {root}{what}; install it with `sudo apt-get install dataset-fashion-mnist` "
            "or pass --data-dir to a folder with its four IDX files"
        )
    return found


def check_dataset(name: str, data_dir: str | Path | None = None) -> None:
    """Raise the one-line DatasetError that loading would raise for a missing or empty dataset, without
    decoding anything (file and folder names only, a few milliseconds even on ImageNet), so that a command
    can fail before it starts anything expensive. Corrupt files are only found by loading."""
    if name == "synthetic":
        return
    if name == "fashion-mnist":
        _fashion_mnist_files(data_dir)
        return
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
    root = _require_dir(data_dir, name)
    if name == "cifar10":
        _cifar_dir(root)
        return
    for folder in _imagefolder_roots(root):
        if folder is not None and not _has_class_with_image(folder):
            raise _no_images_error(folder)
