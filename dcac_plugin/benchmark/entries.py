"""One resolved training run of a suite (:class:`RunEntry`).

:mod:`dcac_plugin.benchmark.suite` makes them, :mod:`dcac_plugin.benchmark.launchers` starts them;
both import this module and not each other's. The data check
(:func:`dcac_plugin.data.check.needs_of_entries`) only calls :meth:`RunEntry.config`, so it imports
nothing of the benchmark package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode

from dcac_plugin.config import get_default_config, merge_config

__all__ = ["RunEntry", "entry_config"]


@dataclass(frozen=True)
class RunEntry:
    """One resolved training run: ``runner(argv())`` trains it, evaluates every target, writes ``output_dir``."""

    run_name: str
    config_file: str
    opts: tuple[str, ...]
    output_dir: Path
    protocol: str | None = None
    model: str = ""
    seed: int | None = None
    targets: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """Command-line arguments for the training entry point."""
        return ["--config-file", self.config_file, *self.opts, "data.save_dir", str(self.output_dir)]

    def config(self) -> CfgNode:
        """The merged config of the run (defaults + its config file + its opts), as the runner builds it.

        Raises:
            ConfigError: unknown key or wrong type (the message names it).
        """
        return merge_config(get_default_config(), self.config_file, self.argv()[2:])


def entry_config(entry: RunEntry) -> CfgNode:
    """:meth:`RunEntry.config` (the name the suite module has exported).

    Raises:
        ConfigError: unknown key or wrong type (the message names it).
    """
    return entry.config()
