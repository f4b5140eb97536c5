"""``sfrs-edge ros2``: run the ROS 2 node (needs a sourced ROS 2 environment)."""

from __future__ import annotations

import sys

import click


@click.command("ros2", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("ros_args", nargs=-1, type=click.UNPROCESSED)
def ros2_command(ros_args):
    """Run the ROS 2 localization node (parameters: --ros-args --params-file FILE or
    -p name:=value; topics, parameters, QoS and the covariance rule: docs/ROS.md)."""
    from ..ros.node import import_ros, main

    import_ros()  # one line naming what to install when ROS 2 is not there
    code = main([sys.argv[0], *ros_args])
    if code:
        sys.exit(code)


COMMANDS = [ros2_command]
