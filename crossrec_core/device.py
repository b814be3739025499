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


def cpu_threads() -> int:
    """Return how many intra-op threads a CPU job should use: CROSSREC_THREADS when set, else the cores this process
    may run on (``taskset`` / cgroup affinity, not the machine's count), at most OMP_NUM_THREADS when that is set.

    Why not ``os.cpu_count()`` (what this did up to session 25): under ``OMP_NUM_THREADS=1 taskset -c 0`` it still
    set two threads, which then took turns on the one core (every benchmark run "at one thread" since session 1 ran
    two threads on one core; bench/RESULTS.md, session 26)."""
    if os.environ.get("CROSSREC_THREADS", "").strip():
        return max(1, int(os.environ["CROSSREC_THREADS"]))
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


def configure_cpu_threads() -> None:
    """Use every core this process may run on for intra-op work, never more (``cpu_threads``)."""
    n = cpu_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for local use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
