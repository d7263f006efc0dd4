"""Export: timm folders that rebuild offline in a fresh process, features_only, tracing, registered seeds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import nas
from nas.export import ExportError, export_model, export_run
from nas.timm_models import MODEL_PREFIX, create_hybridnas
from search_spaces import SEEDS

ROOT = Path(__file__).resolve().parents[1]


def test_seeds_are_registered_timm_models():
    names = timm.list_models(f"{MODEL_PREFIX}_*")
    assert len(names) == len(SEEDS) and "hybridnas_van_b2" in names
    assert not set(names) & set(timm.list_models(exclude_filters=[f"{MODEL_PREFIX}*"]))
    with torch.device("meta"):
        model = timm.create_model("hybridnas_van_b2")
    assert sum(p.numel() for p in model.parameters()) == 26_578_472  # VAN-B2's official count


def test_exported_folder_rebuilds_in_a_fresh_process(tmp_path):
    spec = SEEDS["smt_t"]
    folder = export_model(spec, tmp_path / "smt", numbers={"flops": nas.count(spec).flops}, init_seed=3)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "hybridnas" and config["model_args"]["spec"] == spec.to_dict()
    assert config["pretrained_cfg"]["input_size"] == [3, 224, 224] and config["num_classes"] == 1000
    assert "seeded init" in (folder / "README.md").read_text()

    torch.manual_seed(3)
    reference = create_hybridnas(MODEL_PREFIX, spec).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = reference(x)
    code = f"""
import torch, timm, nas
m = timm.create_model("local-dir:{folder}", pretrained=True).eval()
with torch.no_grad():
    y = m(torch.load("{tmp_path / 'x.pt'}"))
torch.save(y, "{tmp_path / 'y.pt'}")
m = timm.create_model("local-dir:{folder}", pretrained=True, num_classes=7)
assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected)


@pytest.mark.parametrize("name", ["coatnet_0", "pelk_t", "smt_t"])
def test_features_only_gives_four_strided_maps(name):
    model = timm.create_model(f"{MODEL_PREFIX}_{name}", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 128, 128))
    assert [128 // m.shape[-1] for m in maps] == [4, 8, 16, 32]
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    full = timm.create_model(f"{MODEL_PREFIX}_{name}")
    assert model.feature_info.channels() == [i["num_chs"] for i in full.feature_info]
    final, inter = full.eval().forward_intermediates(torch.randn(1, 3, 64, 64))
    assert len(inter) == 4 and final.shape == inter[-1].shape


def test_exported_models_trace_and_export():
    model = timm.create_model(f"{MODEL_PREFIX}_smt_t", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), expected)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)


def test_export_errors_name_the_fix(tmp_path):
    with pytest.raises(ExportError, match="no trials.csv"):
        export_run(tmp_path)
    (tmp_path / "trials.csv").write_text("number,state,seed,layout,params,flops,latency_ms,accuracy,duration_s,"
                                         "error,spec\n")
    with pytest.raises(ExportError, match="no trial 5"):
        export_run(tmp_path, trials=[5])
    with pytest.raises(ExportError, match="front is empty"):
        export_run(tmp_path)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    """torch.onnx.export (dynamo) handles every family's ops; onnxruntime reproduces the outputs."""
    import onnxruntime

    x = torch.randn(1, 3, 64, 64)
    for name in ("smt_t", "coatnet_0"):  # SAM + MSA (SDPA), MBConv + relative-position attention
        model = timm.create_model(f"{MODEL_PREFIX}_{name}", num_classes=10).eval()
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=True)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-3, atol=1e-4)
