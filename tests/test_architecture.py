"""Layering, parameter groups and devices: the rules the rest of the code builds on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from memetrm.alignment import AlignConfig, AlignModel
from memetrm.cli.main import app
from memetrm.devices import autocast_dtype, resolve_device
from memetrm.errors import ConfigError
from memetrm.heads import create_head
from memetrm.training.engine import param_groups

UPPER = ("alignment", "encoders", "evaluation", "features", "serving", "data", "training", "cli")


@pytest.mark.parametrize("module", ["memetrm.heads", "memetrm.layers"])
def test_low_layers_import_no_upper_layer(module: str) -> None:
    code = (f"import {module}, sys; print(' '.join(m for m in sys.modules "
            "if m.startswith('memetrm.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    leaked = [m for m in loaded if m.split(".")[1] in UPPER]
    assert not leaked, leaked
    assert f"{module}" in loaded


def _group_names(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    ids = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    return {ids[id(p)] for p in decay["params"]}, {ids[id(p)] for p in no_decay["params"]}


def test_weight_decay_only_on_weight_matrices() -> None:
    decay, no_decay = _group_names(create_head("mlp", {"image": 6, "text": 4}, hidden=8))
    assert decay == {"net.0.weight", "net.3.weight", "net.6.weight"}
    assert {"norm.norms.image.weight", "norm.norms.image.bias", "net.0.bias"} <= no_decay


def test_heads_and_objectives_name_their_exempt_parameters() -> None:
    decay, no_decay = _group_names(create_head("hyperbolic", {"image": 6, "text": 4}))
    assert {"prototypes", "curvature.log_curv", "lift.log_alpha", "log_scale", "bias"} <= no_decay
    assert "prototypes" not in decay and "fuse.1.weight" in decay
    decay, no_decay = _group_names(AlignModel(AlignConfig(objective="meru"), 6, 5))
    assert {"log_logit_scale", "curvature.log_curv", "image_lift.log_alpha"} <= no_decay
    assert decay == {"image_proj.1.weight", "text_proj.1.weight"}


def test_auto_device_takes_cuda_then_mps_then_cpu() -> None:
    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown precision"):
        autocast_dtype(torch.device("cpu"), "fp8")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu:banana")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["train", "--device", "cuda"],
    ["compare", "--device", "cuda:1", "--heads", "mlp"],
    ["extract", "--device", "cuda"],
])
def test_missing_device_is_a_clear_error(command: list[str]) -> None:
    res = CliRunner().invoke(app, command)
    assert res.exit_code == 2, res.output
    assert "no CUDA GPU is visible" in res.output and "Traceback" not in res.output
