"""The map-build embedding pipeline: same outputs as the plain loop, in order, bounded, extras."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sfrs_edge import embedding
from sfrs_edge.embedding import embed_images
from sfrs_edge.errors import ImageError
from sfrs_edge.images import list_images
from sfrs_edge.model_info import ModelInfo, Preprocessing


class ThumbEngine:
    """An engine with extra outputs: descriptor = 8x6 thumbnail, plus a per-image 'mean'."""

    def __init__(self, extras: bool = True) -> None:
        self.info = ModelInfo(
            backbone="fake",
            preprocessing=Preprocessing(height=6, width=8, mean=(0, 0, 0), std=(1, 1, 1)),
            descriptor_dim=144,
            num_clusters=1,
            local_dim=144,
            pca_dim=None,
            whitening=False,
            fingerprint="thumb",
        )
        self.extra_outputs = {"mean": ((2,), np.float16)} if extras else {}
        self.batches: list[int] = []

    @property
    def dim(self) -> int:
        return 144

    def embed(self, batch):
        self.batches.append(len(batch))
        return batch.reshape(len(batch), -1).astype(np.float32)

    def embed_all(self, batch):
        out = {"descriptor": self.embed(batch)}
        m = batch.reshape(len(batch), -1, 3).mean(1)[:, :2]
        out["mean"] = m.astype(np.float16)
        return out


@pytest.fixture
def files(gardens_point):
    return list_images(gardens_point / "day_left")[:21]


def test_same_as_sequential_and_in_order(files):
    from sfrs_edge.images import load_for_model

    eng = ThumbEngine()
    got = embed_images(eng, files, batch_size=4, threads=2)
    want = np.stack([load_for_model(f, eng.info.preprocessing).ravel() for f in files])
    np.testing.assert_array_equal(got.descriptors, want.astype(np.float32))
    assert got.kept == files and got.skipped == []
    assert eng.batches == [4, 4, 4, 4, 4, 1]
    assert got.outputs["mean"].shape == (21, 2) and got.outputs["mean"].dtype == np.float16
    assert got.images_per_s > 0


def test_plain_engine_gives_descriptor_only(files):
    got = embed_images(ThumbEngine(extras=False), files[:5], batch_size=2, threads=1)
    assert set(got.outputs) == {"descriptor"}


def test_bad_image_fails_or_is_skipped(files, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    mixed = files[:3] + [bad] + files[3:6]
    with pytest.raises(ImageError, match="broken.jpg"):
        embed_images(ThumbEngine(), mixed, batch_size=2)
    got = embed_images(ThumbEngine(), mixed, batch_size=2, skip_bad=True)
    assert got.kept == files[:6] and len(got.skipped) == 1 and "broken.jpg" in got.skipped[0]
    assert len(got.outputs["mean"]) == len(got.descriptors) == 6
    with pytest.raises(ImageError, match="none of the 1 images"):
        embed_images(ThumbEngine(), [bad], skip_bad=True)


def test_decoding_runs_ahead_but_bounded(files, monkeypatch):
    """Decoding overlaps inference, and at most (prefetch + 1) batches are in memory."""
    real = embedding.load_for_model
    state = {"decoded": 0, "max_ahead": 0, "inferred": 0}
    lock = threading.Lock()

    def counting(path, pre):
        img = real(path, pre)
        with lock:
            state["decoded"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["decoded"] - state["inferred"])
        return img

    monkeypatch.setattr(embedding, "load_for_model", counting)

    class Slow(ThumbEngine):
        def embed(self, batch):
            time.sleep(0.2)  # decoders get ahead while the "network" runs
            with lock:
                state["inferred"] += len(batch)
            return super().embed(batch)

    embed_images(Slow(extras=False), files, batch_size=3, threads=2, prefetch=2)
    assert 3 < state["max_ahead"] <= 3 * 3
