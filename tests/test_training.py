"""Trained models out: the model parts timm's training code uses (no-decay tables, parameter groups,
gradient checkpointing, per-family init) and scripts/train.py (learning, reloading, kill -9 resume, errors)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import timm
import timm.optim
import torch
from safetensors.torch import load_file
from timm.models._manipulate import group_parameters

import nas
import nas.model
from nas.export import export_model
from nas.ops import (
    ConvNeXtBlock,
    MbConvBlock,
    MsaBlock,
    PelkBlock,
    SamBlock,
    SCConvBlock,
    VanBlock,
)
from nas.ops.dynamic import CondConvBlock
from nas.ops.pelk import make_pos_embed
from nas.training import CHECKPOINT_NAME, TrainConfig, train
from search_spaces import BLOCK_DEFAULTS, ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec
from trials.data import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"
HAS_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() or (
    FASHION_MNIST_DIR / "train-images-idx3-ubyte").is_file()


def block(kind: str, **params) -> BlockSpec:
    return BlockSpec(kind, params)


def tiny_spec(drop_path: float = 0.0) -> ArchSpec:
    """VAN, ConvNeXt, MBConv and CoAtNet-attention stages, 58k parameters: trains in seconds."""
    return ArchSpec(StemSpec("overlap", kernel=7, norm="bn", width=16), (
        StageSpec(1, 16, (block("lka", kernel=9, dilation=3, mlp_ratio=2.0),), downsample="none", norm_out=True),
        StageSpec(1, 24, (block("convnext", kernel=3, mlp_ratio=2.0),), downsample="patch"),
        StageSpec(1, 32, (block("mbconv", kernel=3, expand_ratio=2.0),), downsample="block"),
        StageSpec(1, 32, (block("msa", heads=2, rel_pos=True, mlp_ratio=2.0),), downsample="block")),
        HeadSpec(norm=True), drop_path_rate=drop_path, name="tiny").validate()


def hybrid_spec(drop_path: float = 0.0) -> ArchSpec:
    """Every kind of position table (PeLK embedding, CoAtNet bias), BatchNorm in blocks, two blocks a stage."""
    return ArchSpec(StemSpec("patch", kernel=4, norm="ln", width=16), (
        StageSpec(2, 16, (block("pelk", kernel=13, center=3),), downsample="none"),
        StageSpec(2, 24, (block("lka", kernel=9, dilation=3, mlp_ratio=2.0),), downsample="overlap", down_norm="bn"),
        StageSpec(2, 32, (block("mbconv", kernel=3, expand_ratio=2.0), block("msa", heads=2, rel_pos=True)),
                  downsample="block"),
        StageSpec(1, 32, (block("sam", heads=2, mlp_ratio=2.0),), downsample="overlap", norm_out=True)),
        HeadSpec(norm=True), drop_path_rate=drop_path, name="hybrid").validate()


@pytest.fixture
def one_thread():
    """The machine's cores are shared with other work: a second thread waiting on a busy core costs more than
    it gains (see STACK_NOTES), and results must not depend on the thread count across processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ model parts

def test_position_tables_are_not_decayed_by_timms_optimizer():
    model = nas.build_model(hybrid_spec(), num_classes=10)
    names = model.no_weight_decay()
    assert names == {"stages.0.pos_embed", "stages.2.blocks.1.attn.rel_pos.table"}
    params = dict(model.named_parameters())
    assert all(params[n].ndim == 3 for n in names)  # 3-d: timm's 1-d rule alone would decay them

    optimizer = timm.optim.create_optimizer_v2(model, "adamw", weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert all(decay_of[id(params[n])] == 0.0 for n in names)
    assert decay_of[id(params["stages.1.blocks.0.attn.proj_in.weight"])] == 0.05  # conv weights are decayed
    assert decay_of[id(params["stages.1.blocks.0.attn.proj_in.bias"])] == 0.0


def test_group_matcher_orders_stem_blocks_head_for_layer_decay():
    model = nas.build_model(hybrid_spec(), num_classes=10)
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) == 1 + 7 + 1  # stem, one group per block, head
    assert all(n.startswith("stem.") for n in fine[0]) and all(n.startswith("head.") for n in fine[8])
    assert {"stages.1.downsample.0.weight", "stages.1.blocks.0.norm1.weight"} <= set(fine[3])
    assert "stages.0.pos_embed" in fine[1] and "stages.3.norm.weight" in fine[7]
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 6 and sorted({n.split(".")[1] for n in coarse[2]}) == ["1"]

    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    stem, block0, head = (scale[id(params[n])] for n in ("stem.0.weight", "stages.0.blocks.0.mlp.fc1.weight",
                                                         "head.fc.weight"))
    assert stem < block0 < head == 1.0


def test_gradient_checkpointing_keeps_outputs_gradients_and_norm_statistics():
    """Drop path on (checkpointing must replay the same random draws), BatchNorm in VAN and MBConv blocks,
    PeLK's positional embedding passed into checkpointed blocks."""
    def run(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        torch.manual_seed(0)
        model = nas.build_model(hybrid_spec(drop_path=0.3), num_classes=10).train()
        model.set_grad_checkpointing(checkpointing)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with mock.patch.object(nas.model, "checkpoint", wraps=nas.model.checkpoint) as spy:
            out = model(x)
            out.square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n or "num_batches" in n}
        return out, grads, stats, spy.call_count

    out, grads, stats, calls = run(False)
    out_ckpt, grads_ckpt, stats_ckpt, calls_ckpt = run(True)
    assert calls == 0 and calls_ckpt == 7  # every block went through torch.utils.checkpoint
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=0)
    assert grads.keys() == grads_ckpt.keys() and all(g is not None for g in grads.values())
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)
    for name in stats:  # updated once a step, as without checkpointing
        torch.testing.assert_close(stats_ckpt[name], stats[name], rtol=0, atol=0, msg=name)


def _check_std(weight: torch.Tensor, expected: float, what: str) -> None:
    std = weight.detach().float().std().item()
    assert abs(std / expected - 1) < 0.1, f"{what}: std {std:.4g}, expected {expected:.4g}"
    assert abs(weight.detach().float().mean().item()) < 0.1 * expected, what


def _params(kind: str, **overrides) -> dict:
    return {**BLOCK_DEFAULTS[kind], **overrides}


def test_each_family_initialises_as_its_official_code():
    torch.manual_seed(0)
    dim = 256
    van = VanBlock(dim, dim, _params("lka"))  # VAN: normal(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups
    _check_std(van.attn.proj_in.weight, math.sqrt(2 / dim), "VAN 1x1 conv")
    _check_std(van.attn.lka.conv_dilated.weight, math.sqrt(2 / 7 ** 2), "VAN depthwise 7x7 (groups = channels)")
    _check_std(van.mlp.fc1.weight, math.sqrt(2 / (4 * dim)), "VAN FFN expand")
    assert van.attn.proj_in.bias.abs().max() == 0 and torch.all(van.norm1.weight == 1)

    sam = SamBlock(dim, dim, _params("sam"))  # SMT: convs as VAN, linears trunc-normal .02
    _check_std(sam.attn.v.weight, 0.02, "SMT linear")
    head_dim = dim // 4
    _check_std(sam.attn.aggregate.weight, math.sqrt(2 / (2 * dim / head_dim)), "SMT grouped 1x1 conv")
    smt_msa = MsaBlock(dim, dim, _params("msa", v_conv=True, mlp="conv"))
    _check_std(smt_msa.attn.qkv.weight, 0.02, "SMT attention qkv")

    coat = MsaBlock(dim, dim, _params("msa", rel_pos=True, heads=8), feat_size=(14, 14))  # timm maxxvit
    _check_std(coat.attn.qkv.weight, math.sqrt(2 / (dim + 3 * dim)), "CoAtNet qkv (xavier-uniform)")
    _check_std(coat.attn.rel_pos.table, 0.02, "CoAtNet relative position table")
    assert 0 < coat.mlp.fc1.bias.abs().max() < 1e-5 and coat.attn.qkv.bias.abs().max() == 0
    mb = MbConvBlock(dim, dim, _params("mbconv"))
    _check_std(mb.conv1.weight, math.sqrt(2 / (4 * dim)), "MBConv expand")
    _check_std(mb.conv_dw.weight, math.sqrt(2 / 3 ** 2), "MBConv depthwise")

    convnext = ConvNeXtBlock(dim, dim, _params("convnext"))  # ConvNeXt / SLaK / PeLK: trunc-normal .02
    _check_std(convnext.conv_dw.weight, 0.02, "ConvNeXt depthwise")
    _check_std(convnext.mlp.fc1.weight, 0.02, "ConvNeXt MLP")
    pelk = PelkBlock(512, 512, _params("pelk"))
    _check_std(pelk.conv.weight, 0.02, "PeLK shared kernel")
    _check_std(pelk.mlp.fc1.weight, 0.02, "PeLK MLP")
    _check_std(make_pos_embed(192, 51), 0.02, "PeLK positional embedding")

    sc = SCConvBlock(dim, dim, _params("scconv"))  # conv variants: TF-EfficientNet fan-out normal
    _check_std(sc.pw1.weight, math.sqrt(2 / (4 * dim)), "conv-variant MLP")
    _check_std(sc.mixer.k3[0].weight, math.sqrt(2 / (3 * 3 * (dim - dim // 2))), "SCConv 3x3")
    cond = CondConvBlock(dim, dim, _params("condconv"))
    _check_std(cond.mixer.weight[0], math.sqrt(2 / 3 ** 2), "CondConv expert (depthwise)")


@pytest.mark.parametrize("stem,expected", [("overlap", lambda w: math.sqrt(2 / (7 * 7 * w))),
                                           ("patch", lambda w: 0.02)])
def test_stem_and_head_initialisation(stem, expected):
    torch.manual_seed(0)
    base = tiny_spec()
    spec = base.replace(stem=StemSpec(stem, kernel=7 if stem == "overlap" else 4, norm="bn"),
                        stages=(dataclasses.replace(base.stages[0], width=256), *base.stages[1:]))
    model = nas.build_model(spec, num_classes=1000)
    _check_std(model.stem[0].weight, expected(256), f"{stem} stem")
    _check_std(model.get_classifier().weight, 0.02, "classifier")


# ------------------------------------------------------------------------------------------- training

def _script_main():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.skipif(not HAS_FASHION, reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
                    "(sudo apt-get install dataset-fashion-mnist)")
def test_training_learns_and_the_folder_reloads_in_a_fresh_process(tmp_path, one_thread):
    folder = export_model(tiny_spec(), tmp_path / "tiny")
    cfg = TrainConfig(dataset="fashion-mnist", epochs=1, max_train=960, max_val=500, batch_size=32, lr=3e-3,
                      checkpoint_every_s=3600)
    result = train(folder, cfg)
    assert result.top1_untrained < 25 and result.top1 > result.top1_untrained + 20, result
    assert result.top5 >= result.top1 and result.weights == "model"

    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == 10 and config["label_names"][0] == "T-shirt/top"
    pcfg = config["pretrained_cfg"]
    assert pcfg["num_classes"] == 10 and pcfg["input_size"] == [3, 32, 32]
    # the training images' own statistics: Fashion-MNIST's pixel mean is 0.286, its std 0.353 at 28 px (resizing
    # to 32 px smooths: 0.338 over the whole training set)
    assert all(abs(m - 0.286) < 0.01 for m in pcfg["mean"]) and all(0.32 < s < 0.354 for s in pcfg["std"])
    training = config["training"]
    assert training["dataset"] == "fashion-mnist" and training["train_images"] == 960 and training["epochs"] == 1
    assert training["top1"] == pytest.approx(result.top1, abs=1e-3) and training["img_size"] == 32
    card = (folder / "README.md").read_text()
    assert "## Training" in card and "fashion-mnist" in card and f"{result.top1:.2f}%" in card
    assert "seeded init" not in card

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = result.model.eval()(x)
    code = f"""
import torch, nas, timm
from timm.data import resolve_data_config
torch.set_num_threads(1)
m = timm.create_model("local-dir:{folder}", pretrained=True).eval()
assert tuple(resolve_data_config(model=m)["input_size"]) == (3, 32, 32)
with torch.no_grad():
    torch.save(m(torch.load("{tmp_path / 'x.pt'}")), "{tmp_path / 'y.pt'}")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, rtol=0, atol=1e-6)


def _read_checkpoint(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


RESUME_ARGS = ["--dataset", "synthetic", "--max-train", "480", "--max-val", "100", "--epochs", "2",
               "--batch-size", "16", "--lr", "2e-3", "--model-ema", "--mixup", "0.2", "--cutmix", "0.5",
               "--hflip", "0.5", "--checkpoint-every-s", "0", "--threads", "1", "--log-every", "20"]


def test_kill_9_mid_epoch_then_the_same_command_resumes_and_finishes(tmp_path, one_thread):
    """A real kill -9 of scripts/train.py once it has checkpointed within an epoch; the same command resumes
    there and ends with the weights an uninterrupted run gets (EMA, Mixup/CutMix and flips included)."""
    killed = export_model(tiny_spec(), tmp_path / "killed")
    cmd = [sys.executable, str(TRAIN_SCRIPT), str(killed), *RESUME_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    ckpt = killed / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    state = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = _read_checkpoint(ckpt) if ckpt.is_file() else None
            if state is not None and state["step"] > 0:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert state is not None and state["step"] > 0, "no mid-epoch checkpoint before the run ended"
    assert proc.returncode == -signal.SIGKILL
    killed_at = _read_checkpoint(ckpt)
    assert (killed_at["epoch"], killed_at["step"]) != (2, 0), "the run had finished before the kill"

    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {ckpt}: epoch {killed_at['epoch'] + 1}, step {killed_at['step']}" in resumed.stderr
    assert "untrained:" not in resumed.stderr  # continued, not restarted
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == [killed_at["epoch"], killed_at["step"]]
    config = json.loads((killed / "config.json").read_text())
    assert config["training"]["epochs"] == 2 and len(config["training"]["history"]) == 2
    assert "resumed from" in (killed / "train.log").read_text()

    # the same settings without interruption, in this process: identical weights
    straight = export_model(tiny_spec(), tmp_path / "straight")
    assert _script_main()([str(straight), *RESUME_ARGS]) == 0
    a, b = load_file(killed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a rerun with other settings would not continue the same training: refused, one line, exit 2
    code, err = _run_main([str(killed), *RESUME_ARGS, "--lr", "1e-3"])
    assert code == 2 and "lr=0.002" in err and "delete" in err


def _run_main(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = _script_main()(argv)
    lines = [line for line in err.getvalue().splitlines() if "error" in line]
    assert len(lines) == 1, err.getvalue()
    return code, lines[0]


@pytest.mark.parametrize("args,says", [
    (["/nonexistent/export", "--dataset", "synthetic"], "no such export folder"),
    (["van_b9", "--dataset", "synthetic"], "van_b0"),  # an unknown seed: the message lists seed names
    (["van_b0", "--dataset", "synthetic"], "needs --out"),
    (["van_b0", "--out", "OUT", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "apt-get install"),
    (["van_b0", "--out", "OUT", "--dataset", "cifar10"], "needs --data-dir"),
    (["EXPORT", "--dataset", "synthetic", "--budget", "1g"], "--budget applies to a seed name"),
    (["RUN:3", "--dataset", "synthetic"], "no trials.csv"),
    (["van_b0", "--out", "OUT", "--dataset", "synthetic", "--device", "cuda"], "no CUDA device"),
    (["van_b0", "--out", "OUT", "--dataset", "synthetic", "--opt", "adamx"], "unknown optimizer"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, says):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "EXPORT").mkdir()
    (tmp_path / "EXPORT" / "config.json").write_text("{}")
    (tmp_path / "RUN").mkdir()
    args = [str(tmp_path / a) if a in ("OUT", "EXPORT") else a.replace("RUN:", f"{tmp_path / 'RUN'}:")
            for a in args]
    code, line = _run_main([*args, "--epochs", "1"])
    assert code == 2 and line.startswith("train.py: error:") and says in line, line
    assert not (tmp_path / "OUT").exists()  # nothing written


def test_bad_flag_values_exit_2(capsys):
    main = _script_main()
    with pytest.raises(SystemExit) as exit_info:
        main(["van_b0", "--dataset", "synthetic", "--epochs", "many"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    code, line = _run_main(["van_b0", "--out", "o", "--dataset", "synthetic", "--epochs", "1", "--img-size", "28"])
    assert code == 2 and "multiple of 32" in line


def test_a_search_trial_is_exported_then_trained(tmp_path, one_thread):
    """RUN_DIR:TRIAL exports the trial to --out (with its search numbers in the card) and trains it there."""
    run = tmp_path / "run"
    run.mkdir()
    spec = tiny_spec()
    row = dict(number=7, state="COMPLETE", seed="", layout=spec.layout, params=1, flops=2, latency_ms=3.0,
               accuracy=50.0, duration_s=1.0, error="", spec=spec.to_json())
    import pandas as pd

    pd.DataFrame([row]).to_csv(run / "trials.csv", index=False)
    out = tmp_path / "trained"
    code = _script_main()([f"{run}:7", "--out", str(out), "--dataset", "synthetic", "--max-train", "64",
                           "--max-val", "32", "--epochs", "1", "--batch-size", "32", "--threads", "1"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["search"]["trial"] == 7 and config["training"]["num_classes"] == 15
    assert "| proxy_accuracy | 50.0 |" in (out / "README.md").read_text()
