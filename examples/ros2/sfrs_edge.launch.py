"""Launch the sfrs-edge node: ``ros2 launch examples/ros2/sfrs_edge.launch.py
image:=/camera/image_raw params:=examples/ros2/params.yaml``.

sfrs-edge is a pip package, not a colcon package, so the node is started as a process
(``sfrs-edge ros2``) with the usual ``--ros-args``; ``sfrs-edge`` must be on the PATH of the
shell that sourced ROS 2.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    here = Path(__file__).resolve().parent
    return LaunchDescription(
        [
            DeclareLaunchArgument("params", default_value=str(here / "params.yaml")),
            DeclareLaunchArgument("image", default_value="/camera/image_raw"),
            DeclareLaunchArgument("namespace", default_value="/"),
            ExecuteProcess(
                cmd=[
                    "sfrs-edge",
                    "ros2",
                    "--ros-args",
                    "-r",
                    ["__ns:=", LaunchConfiguration("namespace")],
                    "--params-file",
                    LaunchConfiguration("params"),
                    "-r",
                    ["image:=", LaunchConfiguration("image")],
                ],
                output="screen",
            ),
        ]
    )
