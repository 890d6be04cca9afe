"""``python tools/train.py --config-file X [--eval-only] [--resume] [key value ...]``.

A thin shell over :mod:`dcac_plugin.runner`: it parses the command line, builds the config and
calls :func:`dcac_plugin.runner.run`, which writes into ``data.save_dir`` the merged
``config.yaml``, ``train.log``, tensorboard events, checkpoints and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dcac_plugin import configs
from dcac_plugin.config import ConfigError
from dcac_plugin.data.datasets import DatasetLayoutError
from dcac_plugin.engine.base import NonFiniteLossError
from dcac_plugin.models.weights import WeightLoadError
from dcac_plugin.runner import command_line, default_command, load_config, run
from dcac_plugin.utils.files import WriteError

logger = logging.getLogger("dcac_plugin")


class _ListConfigs(argparse.Action):
    """``--list-configs``: one config name per line (:func:`dcac_plugin.configs.list`), then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        names = [n for n in configs.list() if not n.startswith("suites/")]
        sys.stdout.write(f"# configs in {configs.root()} (suites: dcac-benchmark --suite NAME, "
                         f"{', '.join(n[len('suites/'):] for n in configs.list('suites/*'))})\n")
        sys.stdout.write("\n".join(names) + "\n")
        parser.exit(0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train / evaluate DCAC or a torchreid baseline (torchreid plugin).")
    p.add_argument("--config-file", default="",
                   help="yaml file overriding the defaults, or a config name: dcac_ma2ms, demo/dcac_tiny, "
                        "baselines/osnet_x1_0_softmax (a file that exists wins; --list-configs)")
    p.add_argument("--list-configs", action=_ListConfigs, help="print the config names and exit")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate model.load_weights (or the run folder's latest checkpoint); new "
                        "data.targets merge into an existing results.json")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in data.save_dir")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: key value ...")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run one training/evaluation job; returns the results record (also written to results.json).

    Args:
        argv: the arguments after the program name.
        command: the full command line to record (default: ``python tools/train.py`` + ``argv``).
    """
    args = parse_args(argv)
    cfg = load_config(args.config_file or None, args.opts, eval_only=args.eval_only, resume=args.resume)
    if command is None:
        command = default_command(args.config_file or None, args.opts, args.eval_only, args.resume)
    return run(cfg, config_file=args.config_file, command=command)


def cli() -> None:
    """Console entry point: exit 2 with one ``error:`` line on bad input, no traceback."""
    try:
        record = main(sys.argv[1:], command=command_line())
    except (ConfigError, DatasetLayoutError, FileNotFoundError, ValueError, NonFiniteLossError,
            WeightLoadError, WriteError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    if record.get("status") == "worker":  # a DDP rank other than 0: rank 0 reports
        return
    sys.stdout.write(json.dumps(record["results"], indent=2) + "\n")
    if record.get("status") != "ok":
        sys.stderr.write(f"error: run status '{record.get('status')}': a target has no finite metrics "
                         f"(see {record.get('run_name')}/train.log)\n")
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
