"""The ``sfrs-edge`` command line: thin click commands over library functions.

Commands that need torch (init, export, train, import) import ``train``/``export`` lazily,
so ``sfrs-edge localize`` starts fast and works where torch is not installed.
Every :class:`~sfrs_edge.errors.SfrsEdgeError` becomes ``error: <message>`` and exit code 1.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import SfrsEdgeError


class Group(click.Group):
    """Turns library errors into a one-line message and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SfrsEdgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="sfrs-edge")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """sfrs-edge: where was this camera frame taken? (SFRS visual place recognition)"""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _register() -> None:
    from . import demo as demo_commands
    from . import evaluate as evaluate_commands
    from . import export as export_commands
    from . import localize as localize_commands
    from . import maps as map_commands
    from . import model as model_commands
    from . import train as train_commands

    for mod in (
        model_commands,
        export_commands,
        map_commands,
        localize_commands,
        evaluate_commands,
        train_commands,
        demo_commands,
    ):
        for command in mod.COMMANDS:
            main.add_command(command)
    from .map_show import show_command

    map_commands.map_group.add_command(show_command)


_register()
