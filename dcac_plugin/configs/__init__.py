"""The project's configs by name: paper protocols, baselines, demo configs and benchmark suites.

The repository's top-level ``configs/`` folder is the one source of truth. A built wheel carries a
copy of it made at build time (``setup.py``'s ``build_py`` copies ``configs/`` into
``dcac_plugin/configs/``), so an installed package finds the same files here; a checkout (or an
editable install) reads the top-level folder itself.

A config *name* is the file's path below that folder, with or without its extension. A name is
never a path: ``configs/dcac_ma2ms.yaml`` is a path (it wins when it exists; when it does not, the
error names the config ``dcac_ma2ms``), so a folder of one's own never silently gets the project's::

    dcac_ma2ms              -> configs/dcac_ma2ms.yaml
    baselines/resnet50_softmax, demo/dcac_tiny, demo/dcac_tiny.yaml
    dcac_tiny               -> configs/demo/dcac_tiny.yaml (a bare file name, when only one file has it)
    suites/demo             -> configs/suites/demo.yaml (``dcac-benchmark --suite demo``)

::

    from dcac_plugin import configs
    configs.list()                    # every config name, e.g. ['baselines/osnet_ain_x1_0_softmax', ...]
    configs.list("suites/*")          # ['suites/demo', 'suites/paper_multi_source', ...]
    configs.path("dcac_ma2ms")        # Path of the file
    configs.resolve("my.yaml")        # a file that exists wins; otherwise a name as above
"""

from __future__ import annotations

import builtins
import fnmatch
import logging
import os
from pathlib import Path

from dcac_plugin.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_SUFFIXES", "list", "path", "resolve", "root"]

#: file kinds a config name can stand for (``.json``: open_clip vision configs named with the suffix).
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_NAMED_SUFFIXES = (".yaml", ".yml")  # what list() shows and a name without suffix means

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parents[1] / "configs"


def root() -> Path:
    """The folder the config names refer to.

    Installed from a wheel: ``dcac_plugin/configs/`` (the copy the build made). In a checkout or an
    editable install: the repository's top-level ``configs/``.

    Raises:
        ConfigError: neither exists (a package built without its configs).
    """
    if (_HERE / "suites").is_dir():
        return _HERE
    if (_CHECKOUT / "suites").is_dir():
        return _CHECKOUT
    raise ConfigError(f"no configs found in {_HERE} nor in {_CHECKOUT}: this dcac_plugin was installed "
                      f"without its configs; reinstall it from a wheel or sdist built by setup.py")


def list(pattern: str = "*") -> builtins.list[str]:
    """Sorted names of the yaml configs (relative path, no suffix) matching an fnmatch ``pattern``.

    Example: ``list("suites/*")`` -> ``['suites/demo', 'suites/paper_multi_source', ...]``.
    """
    base = root()
    names = {f.relative_to(base).with_suffix("").as_posix() for f in base.rglob("*")
             if f.suffix in _NAMED_SUFFIXES and f.is_file()}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _files() -> builtins.list[Path]:
    base = root()
    return sorted(f for f in base.rglob("*") if f.suffix in CONFIG_SUFFIXES and f.is_file())


def path(name: str | os.PathLike, kind: str = "config") -> Path:
    """The file a config name stands for (see the module docstring for the forms a name takes).

    Args:
        name: ``dcac_ma2ms``, ``demo/dcac_tiny``, ``demo/dcac_tiny.yaml``, ``suites/demo``, ...
        kind: ``config`` (training configs: a bare file name is looked up outside ``suites/``) or
            ``suite`` (``demo`` means ``suites/demo``).

    Raises:
        ConfigError: no config has this name, or a bare file name matches several files.
    """
    if kind not in ("config", "suite"):
        raise ValueError(f"kind must be 'config' or 'suite', got {kind!r}")
    base = root()
    text = Path(name).as_posix().strip()
    if Path(text).is_absolute() or ".." in Path(text).parts:
        raise ConfigError(f"'{name}' is not a config name (names are paths below configs/, e.g. "
                          f"demo/dcac_tiny)")
    if text.startswith(("./", "configs/")):
        raise ConfigError(f"'{name}' is a path, not a {kind} name{_hint(text, kind)}")
    stems = [text] if Path(text).suffix in CONFIG_SUFFIXES else [text + s for s in _NAMED_SUFFIXES]
    prefixes = ["suites/", ""] if kind == "suite" else [""]
    for prefix in prefixes:
        for stem in stems:
            cand = base / (prefix + stem)
            if text and cand.is_file():
                return cand
    if text and "/" not in text:  # a bare file name: unique among the configs of this kind
        found = [f for f in _files() if text in (f.name, f.stem)
                 and (f.relative_to(base).parts[0] == "suites") == (kind == "suite")]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(f.relative_to(base).as_posix() for f in found)
            raise ConfigError(f"config name '{name}' matches several configs ({names}); give the folder too")
    raise ConfigError(f"no {kind} named '{name}' ({_listing(kind)})")


def _hint(text: str, kind: str) -> str:
    """For a missing ``configs/...`` path: the name of the project's config of that path, if any."""
    rel = text
    while rel.startswith("./"):
        rel = rel[2:]
    if not rel.startswith("configs/"):
        return ""
    rel = rel[len("configs/"):]
    try:
        found = path(rel, kind)
    except ConfigError:
        return ""
    name = found.relative_to(root()).with_suffix("").as_posix()
    if kind == "suite":
        name = name.removeprefix("suites/")
        return f"; the project's suite of that path is named '{name}' (--suite {name})"
    return f"; the project's config of that path is named '{name}' (--config-file {name})"


_EXAMPLES = ("dcac_ma2ms", "clip_baseline_ma2ms", "baselines/osnet_x1_0_softmax", "demo/dcac_tiny")


def _listing(kind: str) -> str:
    """The names a user can give, for an error message."""
    if kind == "suite":
        return "suites by name: " + ", ".join(n[len("suites/"):] for n in list("suites/*"))
    names = [n for n in list() if not n.startswith("suites/")]
    examples = [n for n in _EXAMPLES if n in names] or names[:4]
    return f"{len(names)} configs by name, e.g. {', '.join(examples)}; dcac-train --list-configs prints them all"


def resolve(ref: str | os.PathLike, kind: str = "config") -> Path:
    """A config reference as a file: an existing path wins, else the packaged config of that name.

    Raises:
        ConfigError: ``ref`` is neither an existing file nor a config name; the message says both.
    """
    p = Path(ref)
    if p.is_file():
        return p
    try:
        found = path(ref, kind)
    except ConfigError as e:
        raise ConfigError(f"{kind} file not found: {ref}, and {e}") from None
    logger.debug("%s '%s': %s", kind, ref, found)
    return found
