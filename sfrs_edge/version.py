"""The package version, in one place: ``pyproject.toml`` reads it (setuptools dynamic version),
``sfrs_edge.__version__``, the CLI's ``--version`` and map manifests import it."""

__version__ = "0.1.0"
