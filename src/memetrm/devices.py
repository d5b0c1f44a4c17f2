"""Device and precision choice: ``auto`` takes CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from memetrm.errors import ConfigError
from memetrm.utils import plural

if TYPE_CHECKING:  # torch is imported on use, so ``memetrm --help`` does not pay for it
    import torch

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``spec``; one that is not present is a clear error, not a traceback."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {spec!r}; use {DEVICE_HELP}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
            raise ConfigError(f"device {spec!r} asked for, but no CUDA GPU is visible (torch "
                              f"{torch.__version__}, built with {build}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {spec!r} asked for, but only {plural(count, 'CUDA GPU')} visible "
                              f"(cuda:0 .. cuda:{count - 1})")
    elif device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {spec!r} asked for, but Apple MPS is not available here; "
                          "use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {spec!r}; use {DEVICE_HELP}")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for running a frozen encoder, or None for full fp32.

    ``auto``: bf16 on GPUs that support it, else fp16 on accelerators, fp32 on the CPU (CPU
    autocast is slower than fp32 for these convolution/attention mixes).
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """Mixed precision for inference on ``device``; a no-op at fp32."""
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


#: environment variables a worker process needs to see what the driver sees
WORKER_ENV = ("MEMETRM_PLUGINS", "MEMETRM_CACHE", "MEMETRM_DATA", "PYTHONPATH")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start an embedded local one (a laptop needs no
    set-up). Workers get the driver's memetrm settings and plugins through their environment."""
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), *sys.path]))
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env}, ignore_reinit_error=True, log_to_driver=False)
