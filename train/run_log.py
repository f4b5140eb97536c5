"""The record of a training run: one row per evaluation, kept as ``log.csv`` in the run folder,
and the recall summary printed at the end."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

LOG_CSV = "log.csv"


class RunLog:
    """Rows (dicts) in order; :meth:`append` rewrites ``log.csv`` when ``path`` is given
    (columns are the union of every row's keys, so later rows may add columns)."""

    def __init__(self, path: Path | None, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = list(rows or [])

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)


def summary_table(history: list[dict[str, Any]]) -> str:
    """Recall per generation (last epoch of each) as a text table."""
    last: dict[Any, dict[str, Any]] = {}
    for row in history:
        last[row["generation"]] = row
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if "_r" in k]
    head = "generation | epoch | " + " | ".join(keys)
    lines = [head, "-" * len(head)]
    for g, row in last.items():
        vals = " | ".join(f"{row.get(k, ''):>6}" for k in keys)
        lines.append(f"{g!s:>10} | {row.get('epoch', '')!s:>5} | {vals}")
    return "\n".join(lines)
