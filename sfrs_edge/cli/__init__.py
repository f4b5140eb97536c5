"""The ``sfrs-edge`` command line: thin click commands over library functions.

Commands that need torch (init, export, import, train, demo) first check that their extra is
installed (``extras.require_extra``: one line naming it, exit 1) and import
``sfrs_edge.train``/``sfrs_edge.export`` inside the command, so ``sfrs-edge localize`` starts
fast and works where torch is not installed.
Every :class:`~sfrs_edge.errors.SfrsEdgeError` becomes ``error: <message>`` and exit code 1.
Any other exception is a bug or an unforeseen input: it becomes one line
``error: internal error (<type>: <message>) ...`` and exit code 2; ``--debug`` or
``SFRS_EDGE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from .. import __version__
from ..errors import SfrsEdgeError

DEBUG_ENV = "SFRS_EDGE_DEBUG"


def _debug_wanted(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(text: object, limit: int | None = None) -> str:
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


class Group(click.Group):
    """Turns library errors into a one-line message and exit code 1 (no traceback), and any
    other exception into one line and exit code 2 (traceback with ``--debug``)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SfrsEdgeError as exc:
            if _debug_wanted(ctx):
                raise
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except MemoryError:
            click.echo("error: out of memory (the input is too large for this machine)", err=True)
            sys.exit(2)
        except Exception as exc:
            if _debug_wanted(ctx):
                raise
            click.echo(
                f"error: internal error ({type(exc).__name__}: {_one_line(exc, 200)}); "
                f"rerun as `sfrs-edge --debug {ctx.invoked_subcommand or 'COMMAND'} ...` (or "
                f"with {DEBUG_ENV}=1) for the traceback and report it",
                err=True,
            )
            sys.exit(2)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="sfrs-edge")
@click.option(
    "-v", "--verbose", is_flag=True, help="Log progress details (before the command, like --debug)."
)
@click.option(
    "--debug",
    is_flag=True,
    help=f"Show tracebacks; goes before the command: sfrs-edge --debug localize ... "
    f"(or set {DEBUG_ENV}=1).",
)
def main(verbose: bool, debug: bool) -> None:
    """sfrs-edge: where was this camera frame taken? (SFRS visual place recognition)

    Options of sfrs-edge itself (-v, --debug) go before the command, e.g.
    `sfrs-edge --debug map build DIR`; each command's own options go after it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _register() -> None:
    from . import demo as demo_commands
    from . import evaluate as evaluate_commands
    from . import export as export_commands
    from . import localize as localize_commands
    from . import maps as map_commands
    from . import model as model_commands
    from . import ros2 as ros2_commands
    from . import train as train_commands

    for mod in (
        model_commands,
        export_commands,
        map_commands,
        localize_commands,
        evaluate_commands,
        train_commands,
        demo_commands,
        ros2_commands,
    ):
        for command in mod.COMMANDS:
            main.add_command(command)
    from .map_show import show_command

    map_commands.map_group.add_command(show_command)


_register()
