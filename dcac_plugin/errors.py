"""Error classes that modules on both sides of an import arrow raise (light: no imports).

:class:`ConfigError` lives here so that :mod:`dcac_plugin.config` (which resolves config names
through :mod:`dcac_plugin.configs`) and :mod:`dcac_plugin.configs` (which raises it) both import
it without importing each other; ``dcac_plugin.config.ConfigError`` re-exports it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""
