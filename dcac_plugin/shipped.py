"""Where the files shipped inside the package live (pathlib only: cheap to import).

``resources/`` holds the weights manifest, the SD-1.5 and tiny architecture configs, the tiny
pretrained priors and the leaderboard page's assets; ``setup.py`` ships the folder as package data.
"""
from __future__ import annotations

from pathlib import Path

#: The package's resource folder.
RESOURCES = Path(__file__).resolve().parent / "resources"
#: Where the shipped priors live (made by ``python tools/pretrain_priors.py --output <this folder>``).
PRIORS_DIR = RESOURCES / "priors"
#: The priors' file names inside a priors folder.
CLIP_FILE = "clip_tiny.safetensors"
SD_FILE = "sd_tiny.safetensors"
REPORT_FILE = "priors.json"
