"""The one place that decides where tensors live and how randomness is seeded."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from crossrec_core.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """Return the torch device to use: CUDA when present (for "auto"), else CPU.

    Args:
        requested: "auto", "cpu" or "cuda" (also "cuda:N").
    """
    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible to PyTorch. "
            "Use --device cpu, or install a CUDA build of torch (see README, 'GPU')."
        )
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ConfigError(f"Unknown device '{requested}'. Use auto, cpu or cuda.")
    device = torch.device(requested)
    if device.type == "cpu":
        configure_cpu_threads()
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX): there a bfloat16 product runs
    ~2.5x faster than a float32 one (bench/RESULTS.md, session 22); elsewhere oneDNN emulates it, slower than float32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def configure_cpu_threads() -> None:
    """Use every core for intra-op work but never oversubscribe (torch's default can exceed cores)."""
    n = int(os.environ.get("CROSSREC_THREADS", "0")) or (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for local use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
