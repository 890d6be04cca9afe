"""Benchmarking: result records, published numbers, leaderboard tables and suite runs.

* :mod:`dcac_plugin.benchmark.records` -- the ``results.json`` record schema, loading and
  per-target expansion, method display names, the packaged published numbers.
* :mod:`dcac_plugin.benchmark.leaderboard` -- pure functions from records to paper-style tables
  (github, latex, csv, html, json) and a PNG bar plot.
* :mod:`dcac_plugin.benchmark.suite` -- a suite yaml (protocols x models) resolved to training
  runs, executed resumably with failures recorded.

Importing this package is light (no torch, no torchreid).
"""
