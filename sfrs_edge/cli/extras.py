"""Optional parts of the install (``pip install 'sfrs-edge[extra]'``) that some commands need.

``pip install sfrs-edge`` gives the runtime only (no torch). Commands that make or export
models check here first, so a user without the extra reads one line naming what to install
instead of a ``ModuleNotFoundError`` traceback from deep inside the command.
"""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError

# import name → the name pip knows the distribution by
DISTRIBUTIONS = {"sklearn": "scikit-learn", "onnx": "onnx", "torch": "torch"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without spec
        return False


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Raise :class:`ConfigError` naming ``extra`` when any of ``modules`` is not installed.

    ``command`` is what the user typed after ``sfrs-edge`` (``init``, ``map build --ray``).
    Only looks the modules up: importing them stays with the command, after this check.
    """
    missing = [DISTRIBUTIONS.get(m, m) for m in modules if not _installed(m)]
    if missing:
        raise ConfigError(
            f"sfrs-edge {command} needs {', '.join(missing)}: pip install 'sfrs-edge[{extra}]'"
        )
