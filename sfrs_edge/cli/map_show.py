"""``sfrs-edge map show``: a picture of a map's places, optionally with a query's answer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import paths
from .options import model_option


@click.command("show")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path), required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("map.png"),
    show_default=True,
    help="Picture to write: PNG or JPEG by the extension (.png, .jpg, .jpeg).",
)
@click.option(
    "--query",
    type=click.Path(path_type=Path),
    default=None,
    help="Also localize this frame and mark its top-k matches and the estimate.",
)
@model_option
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Matches.")
@click.option("--json", "as_json", is_flag=True, help="Print what was drawn as JSON.")
def show_command(map_path, output, query, model_path, k, as_json):
    """Draw MAP [default: $SFRS_EDGE_HOME/map]: places by position (lat/lon or x/y), else by
    row along the route, coloured by sequence; with --query, its top-k and estimate."""
    from ..maps import Map
    from ..report.pictures import map_picture
    from ..report.plots import check_picture_path, write_picture

    check_picture_path(output)  # before any work
    map_path = map_path or paths.default_map()
    result = scores = None
    if query is not None:
        from ..images import read_image
        from ..localize import open_localizer

        loc = open_localizer(model_path, map_path, k=k)
        the_map = loc.map
        result, scores = loc.localize_scores(read_image(query))
        result = type(result)(**{**result.__dict__, "source": str(query)})
    else:
        the_map = Map.open(map_path)
    img, marked = map_picture(the_map, result, scores)
    write_picture(img, output)
    if as_json:
        out = {"picture": str(output), "places": len(the_map), "marked_ids": marked}
        if result is not None:
            d = result.to_dict()
            d.pop("timings")
            out["result"] = d
        click.echo(json.dumps(out))
        return
    click.echo(
        f"wrote {output} ({len(the_map)} places"
        + (f", {len(marked)} matches marked)" if result else ")")
    )
