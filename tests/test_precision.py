"""--precision fp32|tf32|bf16: the context manager, the explainer option, LRP's refusal, the
scripts.

bf16 runs on the CPU under autocast: the maps are compared with float32's by correlation and
predictions only (what holds on any CPU), never by a tolerance tuned to this machine.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import ABPC as abpc_script
import localization as loc_script
import save_h5 as save_script
from agcam.cli.common import script_entry
from agcam.errors import EXIT_USAGE
from agcam.precision import PRECISIONS, autocast_active, precision
from agcam.registry import available_methods, get_explainer, method_class
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS

MODEL_ARGS = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device",
              "cpu"]
#: the issue's bound for AGCAM at bf16 against float32 (golden model, per image)
MIN_CORRELATION = 0.99


def correlations(a: torch.Tensor, b: torch.Tensor):
    return [float(np.corrcoef(x.reshape(-1).double().numpy(), y.reshape(-1).double().numpy())[0, 1])
            for x, y in zip(a, b)]


def _flags():
    return (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)


def test_tf32_flags_only_inside_the_block_and_restored_after_an_error():
    before = _flags()
    with precision("tf32", "cuda"):
        assert _flags() == ("high", True, True)
    assert _flags() == before
    with pytest.raises(RuntimeError, match="boom"):
        with precision("tf32", "cuda"):
            raise RuntimeError("boom")
    assert _flags() == before


def test_bf16_is_autocast_inside_the_block_only():
    assert not autocast_active("cpu")
    with precision("bf16", "cpu"):
        assert autocast_active("cpu")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    assert not autocast_active("cpu")
    with precision("fp32", torch.device("cpu")):
        assert not autocast_active("cpu") and _flags()[0] == "highest"


def test_unknown_precision_is_refused(golden_model):
    with pytest.raises(ValueError, match="fp16"):
        with precision("fp16"):
            pass
    with pytest.raises(ValueError, match="precision must be one of"):
        get_explainer("agcam", golden_model, precision="fp16")


@pytest.fixture(scope="module")
def fp32_results(golden_model, golden_inputs):
    return {name: get_explainer(name, golden_model).explain(golden_inputs)
            for name in available_methods()}


@pytest.mark.parametrize("method", ["agcam", "rollout"])
def test_bf16_agrees_with_float32_on_the_golden_model(golden_model, golden_inputs,
                                                      fp32_results, method):
    predictions32, maps32 = fp32_results[method]
    predictions, maps = get_explainer(method, golden_model, precision="bf16").explain(
        golden_inputs)
    assert maps.dtype == torch.float32 and maps.shape == maps32.shape
    assert torch.equal(predictions, predictions32)
    assert min(correlations(maps, maps32)) >= MIN_CORRELATION


def test_every_method_that_takes_bf16_returns_float32_maps(golden_model, golden_inputs,
                                                           fp32_results):
    """Every registered method (the new ones too) gets the option from the base class."""
    for name in available_methods():
        if "bf16" not in method_class(name).precisions:
            continue
        predictions, maps = get_explainer(name, golden_model, precision="bf16").explain(
            golden_inputs)
        assert maps.dtype == torch.float32 and torch.isfinite(maps).all(), name
        assert maps.shape == fp32_results[name][1].shape, name
        assert torch.equal(predictions, fp32_results[name][0]), name


def test_fp32_is_unchanged_and_nothing_stays_switched_on(golden_model, golden_inputs,
                                                         fp32_results):
    explainer = get_explainer("agcam", golden_model, precision="bf16")
    explainer.explain(golden_inputs[:2])
    assert not autocast_active("cpu") and _flags()[0] == "highest"
    assert all(p.dtype == torch.float32 for p in golden_model.parameters())
    explainer.precision = "fp32"
    predictions, maps = explainer.explain(golden_inputs)
    assert torch.equal(maps, fp32_results["agcam"][1])       # bit for bit
    assert torch.equal(predictions, fp32_results["agcam"][0])
    _, maps = get_explainer("agcam", golden_model, precision="tf32").explain(golden_inputs)
    assert min(correlations(maps, fp32_results["agcam"][1])) >= 0.999


def test_lrp_refuses_bf16(golden_model, golden_inputs):
    with pytest.raises(ValueError, match="lrp cannot run at precision bf16"):
        get_explainer("lrp", golden_model, precision="bf16")
    explainer = get_explainer("lrp", golden_model)
    with pytest.raises(ValueError, match="bf16"):
        explainer.precision = "bf16"
    with pytest.raises(ValueError, match="bf16"):              # a caller's own autocast
        with precision("bf16", "cpu"):
            explainer.explain(golden_inputs[:1])
    assert get_explainer("lrp", golden_model, precision="tf32").precision == "tf32"
    assert set(method_class("lrp").precisions) == set(PRECISIONS) - {"bf16"}


@pytest.mark.parametrize("script", [loc_script, save_script])
def test_scripts_refuse_lrp_at_bf16_with_exit_2(script, tmp_path, capsys):
    argv = ["--method", "lrp", "--precision", "bf16", "--data_root", str(GOLDEN_ILSVRC),
            "--no_progress"] + MODEL_ARGS
    if script is save_script:
        argv += ["--save_root", str(tmp_path)]
    assert script_entry(script.get_args_parser, script.main)(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision bf16" in err[0] and "lrp" in err[0]
    assert not list(tmp_path.iterdir())


def test_explain_command_refuses_lrp_at_bf16(tmp_path, capsys):
    from agcam.__main__ import entry
    image = next(GOLDEN_ILSVRC.rglob("*.jpeg"))
    code = entry(["explain", str(image), "--method", "all", "--precision", "bf16", "--out",
                  str(tmp_path / "out")] + MODEL_ARGS)
    assert code == EXIT_USAGE
    assert "--precision bf16: lrp" in capsys.readouterr().err


def test_store_records_precision_and_abpc_warns_once(tmp_path, capsys):
    save = script_entry(save_script.get_args_parser, save_script.main)
    assert save(["--method", "agcam", "--precision", "bf16", "--save_root", str(tmp_path),
                 "--data_root", str(GOLDEN_ILSVRC), "--num_workers", "0", "--no_progress"]
                + MODEL_ARGS) == 0
    with h5py.File(tmp_path / "ILSVRC_agcam.hdf5", "r") as f:
        assert f.attrs["precision"] == "bf16"
    capsys.readouterr()
    abpc = script_entry(abpc_script.get_args_parser, abpc_script.main)
    assert abpc(["--method", "agcam", "--h5_root", str(tmp_path), "--no_progress"]
                + MODEL_ARGS) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "precision" in line]
    assert len(warnings) == 1 and "bf16" in warnings[0] and "fp32" in warnings[0]
    assert abpc(["--method", "agcam", "--h5_root", str(tmp_path), "--no_progress",
                 "--precision", "bf16"] + MODEL_ARGS) == 0
    assert "precision" not in capsys.readouterr().err
    # the file of another precision is not taken for this run's (no resuming into mixed maps)
    assert save(["--method", "agcam", "--save_root", str(tmp_path), "--data_root",
                 str(GOLDEN_ILSVRC), "--num_workers", "0", "--no_progress"]
                + MODEL_ARGS) == EXIT_USAGE
    assert "precision 'bf16' (this run: 'fp32')" in capsys.readouterr().err


@pytest.mark.cuda
def test_bf16_and_tf32_on_cuda_agree_with_float32(golden_model, golden_inputs):
    import copy
    model = copy.deepcopy(golden_model).cuda()
    images = golden_inputs.cuda()
    _, maps32 = get_explainer("agcam", model).explain(images)
    for mode in ("tf32", "bf16"):
        _, maps = get_explainer("agcam", model, precision=mode).explain(images)
        assert maps.dtype == torch.float32
        assert min(correlations(maps.cpu(), maps32.cpu())) >= MIN_CORRELATION
