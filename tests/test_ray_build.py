"""``map build --ray``: a local Ray instance (2 CPUs) builds the same map as one process, on its
actors."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from sfrs_edge.engine import Engine
from sfrs_edge.images import list_images
from sfrs_edge.maps import Map, build_map

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'sfrs-edge[cluster]')")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_build_runs_on_actors_and_equals_single_process(
    ray_local, tiny_onnx, gardens_point, tmp_path
):
    """One test (ray.init is slow): the rows come from Ray actors (other processes, counted
    through Ray), equal a one-process build, and a bad image is refused or skipped."""
    from sfrs_edge.errors import ImageError

    src = tmp_path / "images"
    src.mkdir()
    for p in list_images(gardens_point / "day_left")[:24]:
        shutil.copy(p, src / p.name)
    engine = Engine.open(tiny_onnx, backend="cpu", threads=1)
    single = build_map(engine, src, tmp_path / "single", batch_size=4)
    assert single.manifest["history"][-1]["embedded_by"] == "pipeline"
    t0 = time.perf_counter()
    on_ray = build_map(engine, src, tmp_path / "ray", batch_size=4, ray="local")
    print(f"ray build of 24 images: {time.perf_counter() - t0:.1f} s")
    event = on_ray.manifest["history"][-1]
    assert event["embedded_by"] == "ray"
    actors = event["ray_actors"]
    assert sum(actors.values()) == 24 and 1 <= len(actors) <= 2  # 2 CPUs: at most 2 actors
    assert f"pid {os.getpid()}" not in actors  # embedded in actor processes, not here
    assert len(on_ray) == len(single) == 24
    np.testing.assert_allclose(on_ray.descriptors, single.descriptors, atol=1e-5)
    assert on_ray.all_places() == single.all_places()
    assert Map.open(tmp_path / "ray").fingerprint == engine.fingerprint

    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        build_map(engine, src, tmp_path / "bad", batch_size=4, ray="local")
    assert not (tmp_path / "bad").exists()
    m = build_map(engine, src, tmp_path / "bad", batch_size=4, ray="local", skip_bad_images=True)
    assert len(m) == 24 and "broken.jpg" not in m.names
    assert "broken.jpg" in m.manifest["history"][-1]["skipped"][0]
    np.testing.assert_allclose(m.descriptors, single.descriptors, atol=1e-5)
