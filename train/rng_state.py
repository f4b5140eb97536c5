"""The random number generators of a training run as plain values (for ``weights_only`` files).

Resuming must continue exactly where the run stopped: torch's, numpy's and Python's generators
are saved with each epoch's checkpoint. numpy's PCG64 state holds 128-bit integers, which
``torch.load(weights_only=True)`` cannot read back, so they are stored as strings.
"""

from __future__ import annotations

import ast
import random
from typing import Any

import numpy as np
import torch


def capture_rng(numpy_rng: np.random.Generator) -> dict[str, Any]:
    """torch's global, ``numpy_rng``'s and Python's ``random`` state as loadable values."""
    bg = numpy_rng.bit_generator.state
    return {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {
            "bit_generator": bg["bit_generator"],
            "state": str(bg["state"]["state"]),
            "inc": str(bg["state"]["inc"]),
            "has_uint32": int(bg["has_uint32"]),
            "uinteger": int(bg["uinteger"]),
        },
        "python_rng": repr(random.getstate()),
    }


def restore_rng(state: dict[str, Any], numpy_rng: np.random.Generator) -> None:
    """Put back what :func:`capture_rng` saved (``numpy_rng`` is set in place)."""
    torch.set_rng_state(state["torch_rng"])
    nr = state["numpy_rng"]
    numpy_rng.bit_generator.state = {
        "bit_generator": nr["bit_generator"],
        "state": {"state": int(nr["state"]), "inc": int(nr["inc"])},
        "has_uint32": nr["has_uint32"],
        "uinteger": nr["uinteger"],
    }
    random.setstate(ast.literal_eval(state["python_rng"]))
