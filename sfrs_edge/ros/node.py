"""The ROS 2 node: a thin rclpy shell over :class:`~sfrs_edge.ros.loop.NodeLoop` and the core.

Everything the node decides (frame conversion, the stream loop, the pose and its covariance,
the matches JSON, diagnostics, frame dropping, reset) lives in :mod:`sfrs_edge.ros.core` and
:mod:`sfrs_edge.ros.loop` and is tested without ROS; this module only declares parameters,
creates the subscription, publishers, timer and service, and turns the core's field dicts into
rclpy messages (``rosidl_runtime_py.set_message.set_message_fields``).

Run: ``sfrs-edge ros2 --ros-args --params-file examples/ros2/params.yaml`` or ``python -m
sfrs_edge.ros2``; a launch file is ``examples/ros2/sfrs_edge.launch.py``. Topics (relative to
the node's namespace): subscribes ``image`` (parameter ``image_topic``; ``sensor_msgs/Image``
or, with ``image_transport: compressed``, ``sensor_msgs/CompressedImage``), publishes
``visual_localization/pose``, ``visual_localization/fix``, ``visual_localization/matches``,
``visual_localization/debug_image`` and ``/diagnostics``; service ``visual_localization/reset``
(``std_srvs/Trigger``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

ROS_MISSING = (
    "sfrs-edge ros2 needs ROS 2 (Humble or newer; pip cannot install rclpy): install it and "
    "`source /opt/ros/<distro>/setup.bash`, then run sfrs-edge from that shell"
)

OUTPUT_TOPICS = {
    "pose": "visual_localization/pose",
    "fix": "visual_localization/fix",
    "matches": "visual_localization/matches",
    "debug_image": "visual_localization/debug_image",
    "diagnostics": "/diagnostics",
}
RESET_SERVICE = "visual_localization/reset"


def import_ros() -> dict[str, Any]:
    """The ROS 2 Python modules the node uses; a :class:`ConfigError` naming them if missing."""
    from ..errors import ConfigError

    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosidl_runtime_py.set_message import set_message_fields
        from sensor_msgs.msg import CompressedImage, Image, NavSatFix
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
    except ImportError as exc:
        raise ConfigError(f"{ROS_MISSING} (missing: {exc.name})") from None
    return {
        "rclpy": rclpy,
        "Node": Node,
        "QoSProfile": QoSProfile,
        "policies": (ReliabilityPolicy, HistoryPolicy, DurabilityPolicy),
        "set_message_fields": set_message_fields,
        "Trigger": Trigger,
        "types": {
            "sensor_msgs/msg/Image": Image,
            "sensor_msgs/msg/CompressedImage": CompressedImage,
            "sensor_msgs/msg/NavSatFix": NavSatFix,
            "geometry_msgs/msg/PoseWithCovarianceStamped": PoseWithCovarianceStamped,
            "std_msgs/msg/String": String,
            "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
        },
    }


def make_node(ros: dict[str, Any]):
    """The node class, defined once rclpy is importable."""
    from .loop import NodeConfig, NodeLoop

    Node = ros["Node"]

    class SfrsEdgeNode(Node):
        def __init__(self, **node_options: Any) -> None:
            super().__init__("sfrs_edge", **node_options)
            defaults = NodeConfig()
            values = {}
            for f in dataclasses.fields(NodeConfig):
                self.declare_parameter(f.name, getattr(defaults, f.name))
                values[f.name] = self.get_parameter(f.name).value
            self.config = NodeConfig.from_mapping(values)
            self.core = self.config.build_core()
            types = ros["types"]
            reliability, history, durability = ros["policies"]
            qos = ros["QoSProfile"](  # keep the newest `qos_depth` frames, volatile
                depth=self.config.qos_depth,
                history=history.KEEP_LAST,
                durability=durability.VOLATILE,
                reliability=reliability.BEST_EFFORT
                if self.config.qos == "sensor_data"
                else reliability.RELIABLE,
            )
            self.pubs = {
                key: self.create_publisher(types[mt], OUTPUT_TOPICS[key], 10)
                for key, mt in (
                    ("pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
                    ("fix", "sensor_msgs/msg/NavSatFix"),
                    ("matches", "std_msgs/msg/String"),
                    ("diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
                )
            }
            if self.config.debug_image:
                self.pubs["debug_image"] = self.create_publisher(
                    types["sensor_msgs/msg/Image"], OUTPUT_TOPICS["debug_image"], 1
                )
            self.loop = NodeLoop(
                self.core, self.publish, self.config.image_topic, self.get_logger().error
            ).start()
            msgtype = self.config.msgtype
            self.create_subscription(
                types[msgtype],
                self.config.image_topic,
                lambda msg: self.loop.on_image(msg, msgtype, self.now_ns()),
                qos,
            )
            self.create_service(ros["Trigger"], RESET_SERVICE, self.on_reset)
            self.create_timer(self.config.diagnostics_period, self.on_timer)
            self.get_logger().info(
                f"localizing {self.config.image_topic} ({msgtype}) against "
                f"{self.core.loc.map.path} ({len(self.core.loc.map)} places)"
            )

        def now_ns(self) -> int:
            return int(self.get_clock().now().nanoseconds)

        def publish(self, message) -> None:
            pub = self.pubs.get(message.key)
            if pub is None:
                return
            msg = ros["types"][message.msgtype]()
            ros["set_message_fields"](msg, message.fields)
            pub.publish(msg)

        def on_timer(self) -> None:
            self.publish(self.core.diagnostics(self.now_ns(), self.loop.dropped))

        def on_reset(self, request, response):
            response.message = self.loop.reset()
            response.success = True
            return response

        def destroy_node(self) -> None:
            self.loop.stop()
            super().destroy_node()

    return SfrsEdgeNode


def main(argv: list[str] | None = None) -> int:
    """Run the node until shutdown (Ctrl-C); ROS arguments (``--ros-args ...``) pass through."""
    from ..errors import SfrsEdgeError

    try:
        ros = import_ros()
    except SfrsEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rclpy = ros["rclpy"]
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = make_node(ros)()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except SfrsEdgeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
