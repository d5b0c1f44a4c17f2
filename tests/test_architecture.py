"""Layering, parameter groups and devices: the rules the rest of the code builds on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
SRC = Path(__file__).resolve().parents[1] / "src"
#: modules every layer may use; they use no layer themselves
BASE = {f"memetrm.{m}" for m in ("config", "devices", "checkpoint", "modelstore", "provenance", "utils",
                                 "errors", "progress")}
#: third-party packages a head may build on besides the standard library
HEAD_STACK = {"torch", "numpy", "sklearn"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (but under ``if TYPE_CHECKING``), resolved to
    module names: ``from memetrm.layers import lorentz`` is ``memetrm.layers.lorentz``."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {_module_name(p): p for p in (SRC / "memetrm").rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i in MODULES} for m, p in MODULES.items()}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components of the module import graph: all singletons."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in GRAPH[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1 or m in GRAPH[m]:
                circles.append(sorted(comp))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert not circles, circles


def test_serving_uses_neither_training_nor_feature_internals() -> None:
    bad = {(m, i) for m, deps in GRAPH.items() if _under(m, "memetrm.serving") for i in deps
           if _under(i, "memetrm.training") or i.startswith("memetrm.features.")}
    assert not bad, sorted(bad)


def test_heads_build_only_on_layers_their_base_and_the_standard_stack() -> None:
    stdlib = set(sys.stdlib_module_names)
    for m, path in MODULES.items():
        if not _under(m, "memetrm.heads"):
            continue
        for i in _imports(path):
            top = i.split(".")[0]
            ok = (top in stdlib or top in HEAD_STACK or i in BASE or _under(i, "memetrm.layers")
                  or _under(i, "memetrm.heads"))
            assert ok, f"{m} imports {i}"


def test_base_modules_import_no_layer() -> None:
    for m in BASE:
        assert GRAPH[m] <= BASE | {"memetrm"}, f"{m} imports {sorted(GRAPH[m] - BASE)}"


def test_heads_are_never_probed_for_capabilities() -> None:
    """Serving and training ask ``isinstance(head, Memory)``, never ``hasattr``."""
    probes = [f"{p.relative_to(SRC)}:{i}" for p in MODULES.values()
              for i, line in enumerate(p.read_text().splitlines(), 1) if "hasattr(" in line]
    assert not probes, probes


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
