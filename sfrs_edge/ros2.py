"""``python -m sfrs_edge.ros2``: the ROS 2 node (see :mod:`sfrs_edge.ros.node`)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from sfrs_edge.ros.node import main

    sys.exit(main())
