"""Command-line entry points, each a ``main(argv)`` function testable in-process.

* :mod:`dcac_plugin.cli.train` -- train / evaluate one run (``tools/train.py``, ``dcac-train``).
* :mod:`dcac_plugin.cli.benchmark` -- run a suite of runs (``tools/benchmark.py``, ``dcac-benchmark``).
* :mod:`dcac_plugin.cli.leaderboard` -- tables and plots from result files (``tools/leaderboard.py``,
  ``dcac-leaderboard``).
"""
