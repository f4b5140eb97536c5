"""How many CPU threads the runtime uses, and holding every pool to that number.

One number, ``threads``, governs every pool the runtime starts: onnxruntime's intra-op pool,
the BLAS library behind numpy (exact search is a matrix product), the image-decoding pool of
map building, and torch's intra-op pool in ``init``. Two pools that each take every core fight
for them (measured on a 2-core CPU: onnxruntime at 2 threads beside OpenBLAS at 2 threads ran at
11.1 frames/s, 18.5 with BLAS held to one).

Default: the machine's *physical* cores that this process may run on. Hyper-threads share one
core's arithmetic units, so a second inference thread on a sibling adds little and takes the
core from whoever else runs on the robot. How they are counted:

- Linux: the CPUs in the process's affinity mask (``os.sched_getaffinity``: respects
  ``taskset`` and cgroup cpusets), grouped by ``/sys/devices/system/cpu/cpuN/topology``
  (``physical_package_id``, ``core_id``); one per distinct pair.
- Elsewhere (macOS, Windows) or when sysfs is unreadable: ``psutil.cpu_count(logical=False)``
  when psutil is installed, else ``os.cpu_count()`` (logical CPUs: may count hyper-threads).

BLAS threads are set through threadpoolctl (a runtime dependency: pure Python, the standard
tool; OpenBLAS/MKL read their environment variables only when first loaded, too late for a
library that numpy already imported).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

SYS_CPU = Path("/sys/devices/system/cpu")


def _linux_physical_cores(cpus: set[int], sys_cpu: Path = SYS_CPU) -> int | None:
    cores = set()
    for cpu in cpus:
        topo = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


@functools.cache
def physical_cores() -> int:
    """Physical cores this process may use (at least 1). See the module docstring."""
    if hasattr(os, "sched_getaffinity"):
        cpus = os.sched_getaffinity(0)
        n = _linux_physical_cores(cpus)
        if n is not None:
            return n
    try:
        import psutil  # optional

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    return max(1, os.cpu_count() or 1)


def resolve(threads: int | None) -> int:
    """``threads`` checked, or the physical core count when None."""
    if threads is None:
        return physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")
    return threads


@functools.cache
def _controller():
    import numpy  # noqa: F401  (its BLAS must be loaded for the controller to see it)

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # declared as a dependency; degrade to no BLAS control, loudly
        log.warning("threadpoolctl is not installed: BLAS threads are not limited")
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def blas_limit(threads: int | None) -> Iterator[None]:
    """Hold numpy's BLAS to ``threads`` (None: physical cores) inside the ``with`` block."""
    ctl = _controller()
    if ctl is None:
        yield
        return
    with ctl.limit(limits=resolve(threads), user_api="blas"):
        yield


def limit_process(threads: int | None) -> int:
    """Hold BLAS, OpenCV and torch (when already imported) to ``threads`` for the rest of the
    process.

    For the CLI: called once per command with its ``--threads``. Returns the resolved count,
    which the command passes on to onnxruntime and its decode pool.
    """
    n = resolve(threads)
    ctl = _controller()
    if ctl is not None:
        ctl.limit(limits=n, user_api="blas")  # the returned limiter is not undone: process-wide
    import sys

    import cv2

    cv2.setNumThreads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
