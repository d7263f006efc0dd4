"""How faithfully a candidate is trained before it is scored: the search's proxy, its promotions and
the proxy-fidelity benchmark's reference are `Fidelity` levels, defined here and nowhere else.

A fidelity fixes the model's size relative to the full architecture (width, blocks per stage), the
data (resolution, image counts) and the optimisation (epochs, learning rate, batch). Image counts of
None take the dataset's own default (`trials.sources.default_samples`, times `train_factor` for the
training images) or, for a reference, all of it.

Everything that trains a proxy reads its settings from `PROXY`: the search's configuration and command
line defaults (`nas.search.SearchConfig`, `nas.cli`), `trials.train.ProxyConfig`'s defaults, the trial
(`trials.trial`) and the benchmarks. Change a value here and all of them follow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from search_spaces.scaling import scale_spec
from search_spaces.spec import ArchSpec
from trials.sources import default_samples

__all__ = ["Fidelity", "PROXY", "PROMOTION", "REFERENCE"]


@dataclass(frozen=True)
class Fidelity:
    """One way of training a candidate to score it; see the module docstring."""

    width: float = 0.5  # stage widths x this, rounded to multiples of 16 (1.0: the full model)
    max_depth: int | None = 2  # blocks per stage at most (None: the full depth)
    img_size: int = 32
    train_images: int | None = None  # None: the dataset's default proxy sample
    val_images: int | None = None
    epochs: int = 4
    lr: float = 2e-3  # AdamW, cosine schedule
    batch_size: int = 64
    warmup_epochs: float = 0.0
    train_factor: float = 1.0  # with train_images None: this multiple of the proxy's training images

    def __post_init__(self) -> None:
        if not 0 < self.width <= 1:
            raise ValueError(f"a fidelity's width is a fraction of the full model in (0, 1], got {self.width}")
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1 or None (full depth), got {self.max_depth}")
        if self.epochs < 1 or self.batch_size < 1 or self.img_size < 32:
            raise ValueError(f"epochs and batch_size must be >= 1 and img_size >= 32, got {self}")
        if not self.train_factor > 0:
            raise ValueError(f"train_factor must be > 0, got {self.train_factor}")

    @property
    def full_size(self) -> bool:
        return self.width == 1.0 and self.max_depth is None

    def model_spec(self, spec: ArchSpec) -> ArchSpec:
        """The spec trained at this fidelity: narrower and shallower, same operators and layout."""
        if self.full_size:
            return spec
        return scale_spec(spec, width=self.width, max_depth=self.max_depth, multiple=16)

    def with_(self, **changes: object) -> Fidelity:
        return replace(self, **changes)

    def sample_sizes(self, proxy_train: int, proxy_val: int) -> tuple[int, int]:
        """(train, val) images at this fidelity when the proxy trains on `proxy_train` and scores on
        `proxy_val`: explicit counts win; otherwise `train_factor` x the proxy's training images and the
        proxy's held-out images (the same ones: the loaders draw them apart from the training sample)."""
        train = self.train_images if self.train_images is not None else max(1, round(self.train_factor * proxy_train))
        return train, (self.val_images if self.val_images is not None else proxy_val)

    def default_sample(self, dataset: str) -> tuple[int, int]:
        """(train, val) images at this fidelity on `dataset`, from the dataset's default proxy sample."""
        return self.sample_sizes(*default_samples(dataset))

    def above(self, proxy: Fidelity) -> Fidelity:
        """This (higher) fidelity made concrete for a search whose proxy is `proxy` (image counts given):
        image counts resolved against the proxy's (`sample_sizes`), at least the proxy's resolution, and
        enough epochs that training sees at least as many images (epochs x images) as the proxy's."""
        if proxy.train_images is None or proxy.val_images is None:
            raise ValueError("above(proxy) needs the proxy's image counts; resolve them first (default_sample)")
        train, val = self.sample_sizes(proxy.train_images, proxy.val_images)
        epochs = max(self.epochs, math.ceil(proxy.epochs * proxy.train_images / train))
        return replace(self, train_images=train, val_images=val, train_factor=1.0, epochs=epochs,
                       img_size=max(self.img_size, proxy.img_size))


# The search's proxy: half width, at most 2 blocks per stage, 4 epochs at 32 px on the dataset's
# default sample (3,000 synthetic images, 10,000 of a real dataset). benchmarks/README.md (proxy
# fidelity) has the alternatives measured against the reference below.
PROXY = Fidelity()
# The benchmark's reference: the full model, one epoch on all 60,000 Fashion-MNIST training images,
# scored on the 10,000 test images (at 300 MFLOPs, 13-20x the compute of a proxy on 3,000 images and
# 4-6x that of one on 10,000: see benchmarks/README.md for why not more).
REFERENCE = Fidelity(width=1.0, max_depth=None, epochs=1, batch_size=128, warmup_epochs=0.1)
# A search's promotions (`nas.search.run_promotions`, --promote): the front members that add most
# hypervolume, trained again as the full model (width 1, every block) at the proxy's resolution on twice
# its training images (6,000 synthetic, 20,000 of a real dataset; capped by what the dataset has) for
# half its epochs: as many optimiser steps as the proxy, each on a model that is the one the FLOPs and
# latency describe, and no image seen more than twice. More images rather than more epochs: at equal
# compute 12,000 x 1 beat 6,000 x 2 beat 3,000 x 4 on Fashion-MNIST (trials.data). The full model costs
# 4-8x the proxy per image (CPU time per image and epoch at 32 px, 5 GFLOPs seeds: VAN-B2 36 ms against
# 6, SMT-T 15 against 3.8), so a promotion costs 4-8x the proxy's training; see the README for the
# default search's figure. A 0.2-epoch linear warmup steadies the first steps of the wider, deeper
# model at the proxy's learning rate (the reference uses the same). `Fidelity.above` keeps a promotion
# at or above the proxy when a run's proxy is larger than the default.
PROMOTION = Fidelity(width=1.0, max_depth=None, img_size=PROXY.img_size, epochs=max(1, PROXY.epochs // 2),
                     lr=PROXY.lr, batch_size=PROXY.batch_size, warmup_epochs=0.2, train_factor=2.0)
