"""A self-contained HTML report of an evaluation: every picture embedded as a data URI.

Sections: a header naming what produced the numbers (query set, map, model, re-ranking and
temporal-filter settings, ground-truth rule), recall@N table and curve, precision–recall of the confidence (how far the
confidence can be trusted as a "this answer is right" signal), and image strips of the worst
failures (wrong at rank 1 with the highest confidence first): query, top-3 matches,
right/wrong borders. One file, opens offline, can be mailed or attached to an issue.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from ..evaluation import Evaluation
from ..images import read_image
from . import plots
from .pictures import match_sheet


def recall_chart(ev: Evaluation) -> np.ndarray:
    ns = sorted(ev.recall)
    s = plots.Series("recall@N", ns, [ev.recall[n] for n in ns], plots.BLUE, markers=True)
    return plots.line_chart(
        [s], "Recall@N", "N (matches looked at)", "% of queries", (0, max(ns) + 1), xticks=ns
    )


def confidence_chart(ev: Evaluation) -> np.ndarray:
    _, precision, recall = ev.confidence_curve()
    s = plots.Series("answer if confidence >= t", recall, precision, plots.ORANGE)
    base = plots.Series(
        f"all answers (R@1 {ev.recall[1]:.1f})", [0, 100], [ev.recall[1]] * 2, plots.GREY
    )
    return plots.line_chart(
        [s, base],
        "Precision-recall of the confidence",
        "recall: % of all queries answered right",
        "precision %",
        (0, 100),
    )


def setup_rows(ev: Evaluation) -> list[tuple[str, str]]:
    """The header's (label, text) rows: what produced these numbers."""
    setup = ev.setup or {}
    model = setup.get("model") or {}
    rerank = setup.get("rerank")
    if rerank:
        rr = (
            f"on: top {rerank['k']} re-ordered by verified local evidence ({rerank['geometry']}"
            f" RANSAC, fused score = similarity + {rerank['weight']:g} x evidence)"
        )
    else:
        rr = "off (order of the global descriptor similarity)"
    filt = setup.get("filter")
    rows = [
        ("query set", setup.get("queries", f"{ev.queries} images")),
        ("map", ev.map_path),
        (
            "model",
            f"{model.get('path', '?')} ({model.get('backbone', '?')}, "
            f"{model.get('descriptor_dim', '?')}-d, {model.get('precision', '?')}, "
            f"fingerprint {model.get('fingerprint', '?')})"
            if model
            else "not recorded",
        ),
        ("re-ranking", rr),
        ("temporal filter", filt or "none (each query localized on its own)"),
        ("right when", ev.ground_truth),
    ]
    return rows


def worst_failures(ev: Evaluation, count: int) -> list:
    wrong = [o for o in ev.outcomes if not o.right]
    return sorted(wrong, key=lambda o: -o.result.confidence)[:count]


def write_report(
    ev: Evaluation,
    path: str | os.PathLike,
    map_,
    failures: int = 8,
    top: int = 3,
    title: str = "sfrs-edge evaluation",
) -> Path:
    """Write the report to ``path`` (atomically) and return it."""
    from dataclasses import replace

    from ..atomic import atomic_write_bytes

    rows = "".join(f"<tr><td>R@{n}</td><td>{v:.1f} %</td></tr>" for n, v in ev.recall.items())
    setup = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in setup_rows(ev)
    )
    strips = []
    for o in worst_failures(ev, failures):
        res = replace(o.result, matches=o.result.matches[:top])
        pos = set(o.positives.tolist())
        try:
            frame = read_image(o.result.source)
        except Exception:  # noqa: BLE001 - the query moved since: show a blank instead
            frame = np.full((150, 220, 3), 200, np.uint8)
        img, _ = match_sheet(frame, res, map_, [m.id in pos for m in res.matches])
        caption = (
            f"query {html.escape(str(o.result.source))}: first right match at rank "
            f"{o.first_right if o.first_right else '&gt; ' + str(len(o.result.matches))}"
            f"{'' if len(pos) else ' (no right place in the map)'}"
        )
        strips.append(
            f'<figure><img alt="failure strip" src="{plots.data_uri(img, "jpeg")}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    failures_html = "".join(strips) or "<p>No failures at rank 1.</p>"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1300px; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 12px; border-bottom: 1px solid #ddd; }}
table.setup th {{ text-align: left; padding: 2px 12px 2px 0; color: #555; font-weight: normal; }}
figure {{ margin: 12px 0; }} figcaption {{ font-size: 13px; color: #555; }}
.charts img {{ margin-right: 12px; border: 1px solid #eee; max-width: 47%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table class="setup">{setup}</table>
<p>{ev.queries} queries; queries with no right place in the map: {ev.without_positives}.</p>
<table>{rows}</table>
<h2>Recall and confidence</h2>
<div class="charts"><img alt="recall curve" src="{plots.data_uri(recall_chart(ev))}">
<img alt="precision-recall of the confidence" src="{plots.data_uri(confidence_chart(ev))}"></div>
<h2>Worst failures</h2>
<p>Wrong at rank 1, most confident first: the query (blue), then its top {top} matches
(green: right, red: wrong).</p>
{failures_html}
</body></html>
"""
    atomic_write_bytes(path, doc.encode())
    return Path(path)
