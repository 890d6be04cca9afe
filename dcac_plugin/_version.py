"""The package version: the one place it is written (``setup.py`` reads it, the package root
re-exports it, run records and exported models stamp it)."""

__version__ = "0.1.0"
