"""Which files ``sfrs-edge demo`` writes into ``$SFRS_EDGE_HOME``, and never replacing a user's.

The demo's model and map are the main job's defaults (``checkpoint.pt``, ``model.onnx``,
``map/``), so that ``sfrs-edge localize frame.jpg`` works after it. Before any work it checks
those paths: files a previous demo wrote (recorded in ``demo.json`` with their size and
modification time) are replaced with a note; anything else there is the user's, and the demo
refuses to replace it unless ``--force`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import ConfigError

RECORD = "demo.json"
# what the demo writes: main-job defaults first, then its own outputs
WRITES = (
    "checkpoint.pt",
    "model.onnx",
    "map",
    "day_left_poses.csv",
    "demo_answer.png",
    "demo_map.png",
    "evaluation",
)


def _stamp(path: Path) -> list[int] | None:
    """Size and mtime of a file, or of a map folder's manifest (replaced by every rebuild);
    None for other folders (the demo's ``evaluation/`` reports)."""
    target = path / "manifest.json" if path.is_dir() else path
    try:
        st = target.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _recorded(home: Path) -> dict:
    try:
        data = json.loads((home / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_home(home: Path, force: bool) -> list[str]:
    """Names under ``home`` the demo will replace (all made by an earlier demo, or ``force``);
    raises ConfigError naming the user's files otherwise. Called before any work."""
    recorded = _recorded(home)
    existing = [n for n in WRITES if (home / n).exists()]
    theirs = [n for n in existing if _stamp(home / n) != recorded.get(n)]
    if theirs and not force:
        raise ConfigError(
            f"{home}: {', '.join(theirs)} already there and not made by an earlier demo; the "
            "demo would replace them. Rerun with --force to replace them, or give the demo "
            "its own home: SFRS_EDGE_HOME=/tmp/sfrs-demo sfrs-edge demo"
        )
    return existing


def record(home: Path) -> None:
    """Remember what the demo wrote, so that the next demo may replace exactly these."""
    stamps = {n: _stamp(home / n) for n in WRITES if (home / n).exists()}
    atomic_write_bytes(home / RECORD, (json.dumps(stamps, indent=1) + "\n").encode())
