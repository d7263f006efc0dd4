"""Train an exported architecture at full size (timm's optimizer, scheduler, losses, EMA); resumable.

SOURCE is an export folder (scripts/export.py), a seed name (van_b0, ...; needs --out) or RUN_DIR:TRIAL.
Rerun the same command after a stop or a kill to continue from the last checkpoint.
"""
import argparse
import logging
import sys
from pathlib import Path

from nas.budget import BudgetError
from nas.export import ExportError
from nas.training import (
    SCHEDULERS,
    TrainConfig,
    TrainingError,
    check_inputs,
    describe,
    resolve_model_dir,
    setup_logging,
    train,
)
from trials.data import DATASET_NAMES, DatasetError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage too; keep errors to one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = _OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="EXPORT_DIR", help="export folder, seed name or RUN_DIR:TRIAL_NUMBER")
    p.add_argument("--out", type=Path, help="folder to export a seed or a trial to and train in (an export folder "
                   "is copied there first; default: trained in place, a trial in RUN_DIR/exports/trialNNNN)")
    p.add_argument("--budget", help="with a seed name: fit it to this FLOP budget first, e.g. 600mflops")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--data-dir", help="dataset folder (default for fashion-mnist: Debian's package)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--img-size", type=int, default=d.img_size, help=f"training resolution (default {d.img_size})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--min-lr", type=float, help="cosine floor (default lr / 100)")
    p.add_argument("--opt", default=d.opt, help="any timm optimizer name (default adamw)")
    p.add_argument("--sched", default=d.sched, choices=SCHEDULERS, help="timm scheduler (default cosine)")
    p.add_argument("--sched-on-epochs", action="store_true", help="step the schedule per epoch, not per update")
    p.add_argument("--warmup-epochs", type=float, help="linear warmup (default a tenth of the run, at most 5)")
    p.add_argument("--warmup-lr", type=float, default=d.warmup_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--smoothing", type=float, default=d.smoothing, help="label smoothing (default 0.1)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    p.add_argument("--hflip", type=float, default=d.hflip, help="horizontal flip probability (default 0)")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the spec's)")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    p.add_argument("--model-ema", action="store_true", help="keep an EMA of the weights; the better one is saved")
    p.add_argument("--model-ema-decay", type=float, default=d.model_ema_decay)
    p.add_argument("--model-ema-warmup", action=argparse.BooleanOptionalAction, default=d.model_ema_warmup,
                   help="timm's EMA decay warmup (default on)")
    p.add_argument("--max-train", type=int, help="train on a seeded, class-balanced sample of N images")
    p.add_argument("--max-val", type=int, help="evaluate on a sample of N held-out images")
    p.add_argument("--device", default=d.device, help="cpu or cuda (bf16 autocast, channels_last)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 when other work shares the cores)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in the backward pass")
    p.add_argument("--checkpoint-every-s", type=float, default=d.checkpoint_every_s,
                   help=f"seconds between checkpoints in an epoch (default {d.checkpoint_every_s:g}; 0: every step)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handlers = setup_logging()
    try:
        try:
            cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k not in ("source", "out", "budget")})
            check_inputs(cfg)
            export_dir = resolve_model_dir(args.source, args.out, args.budget)
            handlers += setup_logging(export_dir)
            result = train(export_dir, cfg)
        except (TrainingError, ExportError, BudgetError, DatasetError) as err:
            print(f"train.py: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("train.py: interrupted; rerun the same command to continue from the last checkpoint",
                  file=sys.stderr)
            return 130
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
