"""``sfrs-edge evaluate``: how often is it right on my route? Recall@N, JSON lines, HTML."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..progress import progress
from .options import backend_option, map_option, model_option


def _query_files(args: tuple[Path, ...]) -> list[Path]:
    from ..images import list_images

    out: list[Path] = []
    for a in args:
        out.extend(list_images(a) if a.is_dir() else [a])
    return out


def run_evaluation(loc, files, truth, out_dir: Path | None, show_progress: bool = True):
    """Evaluate and write ``queries.jsonl`` + ``report.html`` into ``out_dir`` (when given).

    Returns (evaluation, {"jsonl": path, "html": path}). Shared with ``sfrs-edge demo``.
    """
    from ..evaluation import evaluate
    from ..report.html import write_report

    with progress("localizing queries", unit="images", enabled=show_progress) as report:
        ev = evaluate(loc, files, truth, progress=report)
    written: dict[str, str] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        written["jsonl"] = str(ev.write_jsonl(out_dir / "queries.jsonl"))
        written["html"] = str(write_report(ev, out_dir / "report.html", loc.map))
    return ev, written


@click.command("evaluate")
@click.argument("queries", nargs=-1, required=True, type=click.Path(path_type=Path))
@map_option
@model_option
@click.option(
    "--poses",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV of query positions (name, lat,lon or x,y[,z]): a match is right within --radius.",
)
@click.option(
    "--radius",
    type=click.FloatRange(min=0, min_open=True),
    default=25.0,
    show_default=True,
    help="Right within this distance: metres for lat/lon, map units for x/y (VPR: 25 m).",
)
@click.option(
    "--window",
    type=click.IntRange(min=0),
    default=None,
    help="Index-aligned traversals: query i is right at map row j when |i - j| <= N.",
)
@click.option(
    "-k", "k", default=20, show_default=True, type=click.IntRange(min=1), help="Matches per query."
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for queries.jsonl and report.html [default: ./evaluation].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@backend_option
@click.option(
    "--rerank",
    type=click.IntRange(min=1),
    default=None,
    help="Re-rank the top K candidates by verified local features (see localize --rerank).",
)
def evaluate_command(
    queries, map_path, model_path, poses, radius, window, k, out_dir, as_json, backend, rerank
):
    """Recall@1/5/10/20 of QUERIES (image files or folders) against a map, with per-query
    JSON lines and a self-contained HTML report (recall curve, confidence, worst failures)."""
    from ..evaluation import GroundTruth
    from ..localize import open_localizer

    truth = GroundTruth(window=window, poses=str(poses) if poses else None, radius=radius)
    files = _query_files(queries)
    # options a future --rerank/--threads adds go into these keyword arguments
    loc_options = {"k": k, "backend": backend, "rerank": rerank}
    loc = open_localizer(model_path, map_path, **loc_options)
    ev, written = run_evaluation(loc, files, truth, out_dir or Path("evaluation"))
    if as_json:
        click.echo(json.dumps({**ev.summary(), "files": written}))
        return
    click.echo(
        f"{ev.queries} queries against {ev.map_path}; right when {ev.ground_truth}"
        + (f"; {ev.without_positives} have no right place" if ev.without_positives else "")
    )
    click.echo("  ".join(f"R@{n} {v:.1f}" for n, v in ev.recall.items()))
    click.echo(f"per-query results: {written['jsonl']}\nreport: {written['html']}")


COMMANDS = [evaluate_command]
