"""Thread control: physical-core count, one session factory, BLAS held, --threads everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge import threads
from sfrs_edge.errors import ConfigError


def _fake_sys(tmp_path, topology: dict[int, tuple[int, int]]):
    for cpu, (package, core) in topology.items():
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{package}\n")
        (d / "core_id").write_text(f"{core}\n")
    return tmp_path


def test_hyperthreads_count_once(tmp_path):
    # 2 sockets x 2 cores x 2 hyper-threads = 8 logical CPUs, 4 physical cores
    topo = {i: (i // 4, (i % 4) // 2) for i in range(8)}
    sys_cpu = _fake_sys(tmp_path, topo)
    assert threads._linux_physical_cores(set(range(8)), sys_cpu) == 4
    # an affinity mask holding both siblings of one core: one core
    assert threads._linux_physical_cores({0, 1}, sys_cpu) == 1
    assert threads._linux_physical_cores({0, 2, 4}, sys_cpu) == 3
    assert threads._linux_physical_cores({9}, sys_cpu) is None  # unreadable: fall back


def test_physical_cores_and_resolve():
    n = threads.physical_cores()
    assert 1 <= n <= (__import__("os").cpu_count() or 1)
    assert threads.resolve(None) == n and threads.resolve(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError):
            threads.resolve(bad)


def test_blas_limit_holds_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        }

    np.dot(np.ones((4, 4)), np.ones((4, 4)))
    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS threadpool threadpoolctl can see")
    with threads.blas_limit(1):
        assert blas_threads() == {1}
    assert blas_threads() == before


def test_session_factory_threads_and_spin(tiny_onnx):
    from sfrs_edge.backends.onnx import create_session, session_options

    opts = session_options(threads=1, spin=False)
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    opts = session_options(spin=True)
    assert opts.intra_op_num_threads == threads.physical_cores()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    sess = create_session(tiny_onnx, threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_spin_default_from_environment(monkeypatch):
    from sfrs_edge.backends.onnx import DEFAULT_SPIN, default_spin

    monkeypatch.delenv("SFRS_EDGE_SPIN", raising=False)
    assert default_spin() is DEFAULT_SPIN
    monkeypatch.setenv("SFRS_EDGE_SPIN", "1")
    assert default_spin() is True
    monkeypatch.setenv("SFRS_EDGE_SPIN", "off")
    assert default_spin() is False


def test_engine_records_threads(tiny_onnx):
    from sfrs_edge.engine import Engine

    assert Engine.open(tiny_onnx, backend="cpu").backend.threads == threads.physical_cores()
    assert Engine.open(tiny_onnx, backend="cpu", threads=1).backend.threads == 1


def test_no_other_session_constructor():
    """One onnxruntime session factory: nobody else calls InferenceSession."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(p.relative_to(root))
        for folder in ("sfrs_edge", "export", "train")
        for p in (root / folder).rglob("*.py")
        if "InferenceSession(" in p.read_text() and p.name != "onnx.py"
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "command", [["localize"], ["map", "build"], ["map", "add"], ["init"], ["export"]]
)
def test_every_command_takes_threads(command):
    from sfrs_edge.cli import main

    r = CliRunner().invoke(main, [*command, "--help"])
    assert r.exit_code == 0 and "--threads" in r.output


def test_hold_blas_sets_the_pool_for_the_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        }

    np.dot(np.ones((4, 4)), np.ones((4, 4)))
    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS threadpool threadpoolctl can see")
    try:
        threads.hold_blas(1)
        assert blas_threads() == {1}
        np.dot(np.ones((64, 64)), np.ones((64, 64)))
        assert blas_threads() == {1}  # held after the call, not restored
    finally:
        threadpoolctl.threadpool_limits(max(before))
