"""Install dcac_plugin: DCAC (diffusion-assisted generalisable re-ID) for torchreid."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    for line in (HERE / "dcac_plugin" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in dcac_plugin/__init__.py")


setup(
    name="dcac_plugin",
    version=read_version(),
    description="DCAC (Li & Gong 2025) for torchreid: diffusion-assisted domain-generalisable person re-ID",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",  # SPDX expression; the text is in LICENSE
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["dcac_plugin", "dcac_plugin.*"]),
    include_package_data=True,
    package_data={"dcac_plugin": ["resources/**/*", "resources/*", "benchmark/*.yaml"]},
    install_requires=[
        # A GPU user installs the torch build for their CUDA first (see README); these pins
        # are the versions tested here.
        "torch==2.14.1",
        "torchvision==0.29.1",
        # PyPI torchreid 0.2.5 (upstream 1.4.0 code under torchreid.reid) declares none of
        # what it imports; these are its real runtime needs.
        "torchreid==0.2.5",
        "numpy>=2",
        "scipy",
        "opencv-python-headless",
        "gdown",
        "tensorboard",
        "six",
        "h5py",
        "Pillow",
        "diffusers==0.42.1",
        "open_clip_torch==3.3.0",
        "peft==0.21.2",
        "safetensors==0.8.0",
        "yacs==0.1.8",
        "PyYAML",
        "tabulate",
        "tqdm",
        "numba>=0.60",
        "matplotlib",
    ],
    extras_require={
        # ONNX export (tools/export.py) and its onnxruntime check
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
        # submitit: the Slurm launcher of tools/benchmark.py (its tests run a local Slurm cluster)
        "slurm": ["submitit>=1.5"],
        "test": ["pytest", "pytest-timeout", "ruff", "submitit>=1.5", "onnx>=1.16", "onnxruntime>=1.18"],
    },
    entry_points={
        "console_scripts": [
            "dcac-train=dcac_plugin.cli.train:cli",
            "dcac-benchmark=dcac_plugin.cli.benchmark:cli",
            "dcac-leaderboard=dcac_plugin.cli.leaderboard:cli",
            "dcac-extract=dcac_plugin.cli.extract:cli",
            "dcac-search=dcac_plugin.cli.search:cli",
            "dcac-visrank=dcac_plugin.cli.visrank:cli",
            "dcac-export=dcac_plugin.cli.export:cli",
            "dcac-fetch-weights=dcac_plugin.cli.fetch_weights:cli",
            "dcac-check-data=dcac_plugin.cli.check_data:cli",
        ]
    },
)
