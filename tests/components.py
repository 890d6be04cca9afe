"""Real components some tests need (Chromium, a local Slurm, onnxruntime, submitit, numba).

A test calls :func:`unavailable` (or :func:`require_import`) when its component cannot be had.
Outside CI that is a skip, and the run ends with one line naming every skipped component
(``conftest.py`` prints it). With ``CI=true`` (set by CI services) or ``DCAC_REQUIRE_ALL=1`` it is a
failure with the same reason, so a green CI run cannot hide a missing component.

Only "this machine cannot have it" goes through here (no root, no apt, package absent). A component
that is there but misbehaves (e.g. ``tools/slurm_local.sh`` failing after its packages are
installed) is a plain test failure, always.
"""

from __future__ import annotations

import importlib
import os
import re
from types import ModuleType
from typing import NoReturn

import pytest

#: Prefix of the skip reason of a missing component; ``conftest.py`` collects these.
TAG = "missing component"
_TAG_RE = re.compile(re.escape(TAG) + r" '([^']+)': ")


def required() -> bool:
    """True when a missing component must fail the run (``CI=true`` or ``DCAC_REQUIRE_ALL=1``)."""
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return ci or os.environ.get("DCAC_REQUIRE_ALL", "").strip() == "1"


def unavailable(component: str, reason: str, *, module_level: bool = False) -> NoReturn:
    """Skip (outside CI) or fail (``CI=true`` / ``DCAC_REQUIRE_ALL=1``): ``component`` cannot be had."""
    msg = f"{TAG} '{component}': {reason}"
    if required():
        pytest.fail(msg + "\n(CI=true or DCAC_REQUIRE_ALL=1: a missing component fails the run "
                    "instead of skipping)", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def require_import(module: str, component: str | None = None, *, module_level: bool = False) -> ModuleType:
    """Import ``module`` or report it missing through :func:`unavailable`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(component or module, f"cannot import {module} ({exc}); it is in the project's "
                    "[test] extra: pip install -e '.[test]'", module_level=module_level)


def component_of(reason: str) -> tuple[str, str] | None:
    """(component, reason) of a skip reason written by :func:`unavailable`, else ``None``."""
    m = _TAG_RE.search(reason)
    return (m.group(1), reason[m.end():].strip()) if m else None
