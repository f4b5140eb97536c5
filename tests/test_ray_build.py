"""``map build --ray``: a local Ray instance (2 CPUs) builds the same map as one process."""

from __future__ import annotations

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


def test_ray_build_equals_single_process(ray_local, tiny_onnx, gardens_point, tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for p in list_images(gardens_point / "day_left")[:24]:
        shutil.copy(p, src / p.name)
    engine = Engine.open(tiny_onnx, backend="cpu", threads=1)
    single = build_map(engine, src, tmp_path / "single", batch_size=4)
    t0 = time.perf_counter()
    on_ray = build_map(engine, src, tmp_path / "ray", batch_size=4, ray="local")
    print(f"ray build of 24 images: {time.perf_counter() - t0:.1f} s")
    assert len(on_ray) == len(single) == 24
    np.testing.assert_allclose(on_ray.descriptors, single.descriptors, atol=1e-5)
    assert [p.name for p in on_ray.all_places()] == [p.name for p in single.all_places()]
    assert on_ray.all_places() == single.all_places()
    assert Map.open(tmp_path / "ray").fingerprint == engine.fingerprint


def test_ray_build_refuses_a_bad_image(ray_local, tiny_onnx, gardens_point, tmp_path):
    from sfrs_edge.errors import ImageError

    src = tmp_path / "images"
    src.mkdir()
    for p in list_images(gardens_point / "day_left")[:6]:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    engine = Engine.open(tiny_onnx, backend="cpu", threads=1)
    with pytest.raises(ImageError, match="broken.jpg"):
        build_map(engine, src, tmp_path / "ray", batch_size=4, ray="local")
    assert not (tmp_path / "ray").exists()
    m = build_map(engine, src, tmp_path / "ray", batch_size=4, ray="local", skip_bad_images=True)
    assert len(m) == 6 and "broken.jpg" not in m.names
