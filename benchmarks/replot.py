"""Redraw committed figures of docs/BENCHMARKS.md from the tables committed beside them, with
the benchmarks' own plot functions (for a change of figure style; the numbers are the tables').

    python benchmarks/replot.py            # writes docs/img/search_tradeoff_100k.png,
                                           # latency_search_tradeoff.png, latency_latency_stages.png

Figures whose data the tables do not hold (precision-recall curves, the map-scale plot that
joins several runs) are redrawn only by running their benchmark again.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import latency, search  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
IMG = DOC.parent / "img"


def tables_after(text: str, section: str, title: str) -> list[dict[str, str]]:
    """Rows (header → cell) of the first table titled ``title`` under heading ``section``."""
    start = text.index(section)
    at = text.index(title, start)
    lines = text[at:].splitlines()[2:]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def _num(cell: str) -> float | None:
    cell = cell.replace(",", "")
    return None if cell in ("–", "-", "") else float(cell)


def search_rows(rows: list[dict[str, str]]) -> list[dict]:
    return [
        {
            "dim": int(_num(r["dim"])),
            "size": int(_num(r["map size"])),
            "index": r["index"],
            "ef": _num(r["ef"]),
            "top1_agreement": _num(r["top-1 agree %"]),
            "speedup_vs_exact": _num(r["speed-up vs exact"]),
        }
        for r in rows
    ]


def stage_models(rows: list[dict[str, str]]) -> list[dict]:
    """The latency table as ``results["models"]`` (p50 of each stage; what the plot reads)."""
    models: dict[tuple[str, str], dict] = {}
    heads = ("decode", "preprocess", "inference", "search (10k exact)")
    columns = dict(zip(latency.STAGES, heads, strict=True))
    for r in rows:
        m = models.setdefault(
            (r["model"], r["input"]), {"backbone": r["model"], "input": r["input"], "frame": {}}
        )
        m["frame"][r["backend"]] = {
            s: {"p50_ms": float(re.split(r"\s*/\s*", r[c])[0])} for s, c in columns.items()
        }
    return list(models.values())


def main() -> int:
    text = DOC.read_text()
    title = "#### Search: exact vs HNSW (one query, k=10, through Map.search)"
    hnsw_100k = search_rows(tables_after(text, "## HNSW at 100k x 4096-d", title))
    search.plot(hnsw_100k, IMG / "search_tradeoff_100k.png")
    lat = "## Results: latency (`benchmarks/latency.py`)"
    search.plot(search_rows(tables_after(text, lat, title)), IMG / "latency_search_tradeoff.png")
    stages = stage_models(tables_after(text, lat, "#### One frame, per stage"))
    (path,) = latency.plots({"models": stages}, IMG)
    path.replace(IMG / "latency_latency_stages.png")
    print(f"redrew 3 figures in {IMG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
