"""The session of a lesson: seeding, device choice and quick mode, all in the one explicit ``setup`` call
(lesson 00)."""
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

QUICK_ENV = "COURSE_QUICK"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Config:
    """What ``setup`` chose: the seed, the torch device and whether quick mode is on."""

    seed: int
    device: torch.device
    quick: bool


def quick_mode(environ=None) -> bool:
    """Quick mode: ``COURSE_QUICK`` if set (1/0, true/false), else on when ``CI`` is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value:
        raise ValueError(f"{QUICK_ENV}={value!r}: use 1 or 0")
    return bool(environ.get("CI"))


def pick_device() -> torch.device:
    """The fastest device present: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, verbose: bool = True) -> Config:
    """Seed everything, pick the device, read quick mode; print and return the choice (lesson 00)."""
    seed_everything(seed)
    config = Config(seed=seed, device=pick_device(), quick=quick_mode())
    if verbose:
        mode = "quick (small data, few epochs)" if config.quick else "full"
        print(f"seed={seed}  device={config.device}  mode={mode}  torch={torch.__version__}")
    return config
