"""Run metadata for results records: git commit, library versions, device."""

from __future__ import annotations

import importlib.metadata as md
import logging
import subprocess
import sys
from pathlib import Path

import torch

from dcac_plugin._version import __version__

logger = logging.getLogger(__name__)

_PACKAGES = ("torch", "torchvision", "torchreid", "diffusers", "open_clip_torch", "peft", "numpy", "yacs")


def git_commit() -> str:
    """The commit of the checkout this package runs from, or ``'unknown'`` (no git, or installed)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide results."""
    out = {"python": sys.version.split()[0], "dcac_plugin": _own_version()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _own_version() -> str:
    return __version__


def device_description(device: torch.device) -> str:
    """``'cpu (N threads)'`` or the CUDA device name."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
