"""Install dcac_plugin: DCAC (diffusion-assisted generalisable re-ID) for torchreid."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
CONFIGS = "configs"  # the one source of the configs; built packages carry a copy as dcac_plugin/configs/
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def read_version() -> str:
    for line in (HERE / "dcac_plugin" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in dcac_plugin/_version.py")


class BuildPyWithConfigs(build_py):
    """build_py, plus the top-level configs/ copied into the built package as dcac_plugin/configs/.

    configs/ stays the single source (what the repository shows, what a checkout and an editable
    install read); ``dcac_plugin.configs`` finds the copy in an installed wheel.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads configs/ in place
            return
        for src in self._config_files():
            dst = Path(self.build_lib) / "dcac_plugin" / src.relative_to(HERE)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if getattr(self, "editable_mode", False):
            return super().get_outputs(include_bytecode)
        built = [str(Path(self.build_lib) / "dcac_plugin" / f.relative_to(HERE)) for f in self._config_files()]
        return super().get_outputs(include_bytecode) + built

    @staticmethod
    def _config_files() -> list[Path]:
        root = HERE / CONFIGS
        if not (root / "suites").is_dir():
            raise RuntimeError(f"{root} is missing: build from a checkout or an sdist that holds configs/")
        return sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in CONFIG_SUFFIXES)


setup(
    name="dcac_plugin",
    version=read_version(),
    description="DCAC (Li & Gong 2025) for torchreid: diffusion-assisted domain-generalisable person re-ID",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license_expression="MIT",  # SPDX (metadata License-Expression); the text is in LICENSE
    license_files=["LICENSE"],
    author="the dcac_plugin authors",
    keywords=["person re-identification", "domain generalization", "diffusion models", "torchreid", "CLIP"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    project_urls={
        "Paper": "https://doi.org/10.3390/s25020552",
        "Preprint": "https://arxiv.org/abs/2502.06619",
        "Original implementation": "https://github.com/RikoLi/DCAC",
        "torchreid": "https://github.com/KaiyangZhou/deep-person-reid",
    },
    python_requires=">=3.10",
    packages=find_packages(include=["dcac_plugin", "dcac_plugin.*"]),
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
        # build + twine: the release checks (tests/test_wheel_install.py builds and checks the sdist and wheel)
        "test": ["pytest", "pytest-timeout", "ruff", "submitit>=1.5", "onnx>=1.16", "onnxruntime>=1.18", "build",
                 "twine"],
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
            "dcac-make-synthetic=dcac_plugin.cli.make_synthetic:cli",
        ]
    },
    cmdclass={"build_py": BuildPyWithConfigs},
)
