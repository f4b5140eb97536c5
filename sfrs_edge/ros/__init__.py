"""ROS 2 for sfrs-edge: rosbag2 recordings in (maps, localization, evaluation) and a node.

- ``bag``: open a rosbag2 folder or ``.mcap``/``.db3`` file (``rosbags``, the ``[ros]``
  extra; no ROS installation needed) and read a topic's messages;
- ``frames``: image messages (``sensor_msgs/Image``, ``CompressedImage``) → BGR frames;
- ``positions``: NavSatFix / PoseStamped / Odometry topics → a track, interpolated at stamps;
- ``source``: the frames of a bag's image topic; ``mapping``: maps from bags;
- ``core``: the localization core (frames in → pose, fix, matches, diagnostics out) that the
  bag path and the node share; ``messages``: its transport-free messages;
- ``bag_writer``: result bags, written atomically; ``localize_bag`` / ``evaluate_bag``: the
  ``localize --bag`` and ``evaluate --bag`` runs;
- ``loop``: the node's parameters and camera loop without ROS; ``node``: the thin rclpy shell
  (``sfrs-edge ros2``, ``python -m sfrs_edge.ros2``).

See docs/ROS.md.
"""
