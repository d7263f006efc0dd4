"""Fidelity levels: what the proxy trains, and that the default proxy learns on every dataset layout."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import nas
from search_spaces import SEEDS
from trials.data import load_dataset
from trials.fidelity import PROXY, REFERENCE, Fidelity
from trials.train import ProxyConfig, train_and_evaluate


def test_proxy_halves_widths_to_multiples_of_16_and_caps_depth():
    # VAN-B0 (Guo et al. 2022, table 2): widths 32, 64, 160, 256 and depths 3, 3, 5, 2
    proxy = PROXY.model_spec(SEEDS["van_b0"])
    assert [s.width for s in proxy.stages] == [16, 32, 80, 128]
    assert [s.depth for s in proxy.stages] == [min(d, PROXY.max_depth) for d in (3, 3, 5, 2)]
    assert [b.type for s in proxy.stages for b in s.blocks] == ["lka"] * 4


def test_full_size_fidelity_trains_the_architecture_itself():
    spec = SEEDS["smt_t"]
    assert REFERENCE.full_size and REFERENCE.model_spec(spec) == spec
    assert nas.count(REFERENCE.model_spec(spec)).params == nas.count(spec).params


@pytest.mark.parametrize("changes, field", [({"width": 0.0}, "width"), ({"width": 1.5}, "width"),
                                            ({"max_depth": 0}, "max_depth"), ({"epochs": 0}, "epochs")])
def test_impossible_fidelity_is_refused_with_the_field_named(changes, field):
    with pytest.raises(ValueError, match=field):
        Fidelity(**changes)


def _class_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A noisy image whose mean colour and stripe direction carry the label (learnable, not trivial)."""
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float32)
    stripes = (np.arange(size)[:, None] if label % 2 else np.arange(size)[None, :]) % 4 < 2
    img = colour * 0.6 + 60 * stripes[..., None] + rng.normal(0, 40, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_cifar_layout(root, per_batch: int, rng: np.random.Generator) -> None:
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        data = np.stack([_class_image(rng, int(y), 32).transpose(2, 0, 1).reshape(-1) for y in labels])
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, f)


def _write_image_folder(root, per_class: int, rng: np.random.Generator) -> None:
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for label in range(6):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_class_image(rng, label, 40)).save(folder / f"{i}.png")


@pytest.mark.parametrize("layout", ["cifar10", "imagefolder", pytest.param("synthetic", marks=pytest.mark.slow)])
def test_default_proxy_learns_on_every_dataset_layout(tmp_path, layout):
    """The default proxy (width, depth, resolution, epochs, lr, batch) must not fall apart off Fashion-MNIST."""
    rng = np.random.default_rng(0)
    if layout == "cifar10":
        _write_cifar_layout(tmp_path / "cifar-10-batches-py", per_batch=60, rng=rng)
        data = load_dataset("cifar10", tmp_path, img_size=PROXY.img_size)
    elif layout == "imagefolder":
        _write_image_folder(tmp_path / "folder", per_class=50, rng=rng)
        data = load_dataset("imagefolder", tmp_path / "folder", img_size=PROXY.img_size)
    else:  # the embedded task at its default proxy sample: hard, 15 classes
        data = load_dataset("synthetic", img_size=PROXY.img_size, max_train=3000, max_val=1000)
    torch.manual_seed(0)
    model = nas.build_model(PROXY.model_spec(SEEDS["pelk_t"]), num_classes=data.num_classes, img_size=data.img_size)
    cfg = ProxyConfig(epochs=PROXY.epochs, lr=PROXY.lr, batch_size=PROXY.batch_size, num_threads=1)
    curve = train_and_evaluate(model, data, cfg).val_top1
    chance = 100.0 / data.num_classes
    # chance is 10% (CIFAR-10 layout), 16.7% (6-class folder), 6.7% (synthetic's 15 classes)
    assert curve[-1] > 3 * chance, (layout, curve)
    assert curve[-1] >= curve[0] - 5, (layout, curve)  # it learns rather than drifts
