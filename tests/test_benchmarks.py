"""Benchmarks: helpers behave, and each script runs end to end with a tiny configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO))

from benchmarks import common, search  # noqa: E402


def test_stats_percentiles():
    st = common.Stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert st.n == 100
    assert st.p50 == pytest.approx(50.5)
    assert st.p90 == pytest.approx(90.1)
    assert st.p99 == pytest.approx(99.01)


def test_time_interleaved_round_robin():
    order = []
    st = common.time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3
    )
    assert order == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds
    assert st["a"].n == st["b"].n == 3


def test_table_markdown():
    t = common.Table("T", ["x", "y"], [[1, 0.5], ["z", float("nan")]])
    md = t.markdown()
    assert "| x | y |" in md and "| 1 | 0.50 |" in md and "| z | – |" in md


def test_to_dim_keeps_geometry_and_grow_gives_unit_vectors():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 200)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    up = search.to_dim(base, 64, seed=1)  # 64 >= 30 images: exact rotation
    np.testing.assert_allclose(up @ up.T, base @ base.T, atol=1e-5)
    down = search.to_dim(base, 8, seed=1)  # PCA cut
    assert down.shape == (30, 8)
    seqs = [np.arange(0, 15), np.arange(15, 30)]
    x = search.grow(up, seqs, 500, rng)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # near their sequence: every grown vector is closer to some base vector than noise alone
    assert (x @ up.T).max(axis=1).min() > 0.5


def test_latency_ctrl_c_writes_what_was_measured(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the run: one line, exit 130, and the rows measured so far on disk."""
    from benchmarks import latency, models

    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    net = type("Net", (), {"config": type("C", (), {"backbone": "efficientnet_lite0"})()})()
    monkeypatch.setattr(models, "quick_offtheshelf", lambda *a, **k: net)
    monkeypatch.setattr(search, "base_descriptors", lambda *a, **k: (base, [np.arange(40)]))
    row = {"dim": 32, "size": 1000, "index": "exact", "ef": None, "build_s": 0.0,
           "bytes_per_vector": 128, "top1_agreement": 100.0, "top10_agreement": 100.0,
           "latency": common.Stats([0.001, 0.002]).summary()}  # fmt: skip

    def run(base, seqs, cfg, rows=None):
        rows.append(row)  # one row measured, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "run", run)
    code = latency.main(["--only", "search", "--out", str(tmp_path)])
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted after") and "latency.json" in err[-1]
    assert "Traceback" not in "\n".join(err)
    res = json.loads((tmp_path / "latency.json").read_text())
    assert res["interrupted"] is True and res["search"][0]["size"] == 1000
    assert "interrupted: partial results" in (tmp_path / "latency.md").read_text()


def test_replot_reads_the_committed_tables():
    from benchmarks import replot

    text = replot.DOC.read_text()
    title = "#### Search: exact vs HNSW (one query, k=10, through Map.search)"
    rows = replot.search_rows(replot.tables_after(text, "## HNSW at 100k x 4096-d", title))
    assert {r["index"] for r in rows} == {"exact", "hnsw"} and len(rows) >= 2
    assert all(0 < r["top1_agreement"] <= 100 and r["size"] == 100_000 for r in rows)
    lat = "## Results: latency (`benchmarks/latency.py`)"
    models = replot.stage_models(replot.tables_after(text, lat, "#### One frame, per stage"))
    assert models and all(
        set(f) == set(latency_stages()) for m in models for f in m["frame"].values()
    )


def latency_stages():
    from benchmarks import latency

    return latency.STAGES


def test_pr_curve():
    from benchmarks.recall import pr_curve

    rec, prec = pr_curve([0.9, 0.8, 0.7, 0.6], [True, True, False, True])
    np.testing.assert_allclose(rec, [0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(prec, [1.0, 1.0, 2 / 3, 0.75])


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / script), *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_latency_smoke(tmp_path, tiny_checkpoint):
    _run("latency.py", "--smoke", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path))
    res = json.loads((tmp_path / "latency.json").read_text())
    (m,) = res["models"]
    assert {"PyTorch eager FP32", "onnxruntime CPU FP32"} <= set(m["frame"])
    for f in m["frame"].values():
        for stage in ("decode", "preprocess", "inference", "search", "total"):
            assert f[stage]["n"] >= 3 and 0 < f[stage]["p50_ms"] <= f[stage]["p99_ms"]
    assert m["parity_fp32"]["min_cos"] >= 0.9999
    assert m["throughput"]["1"]["onnxruntime CPU FP32"]["images_per_s"] > 0
    kinds = {(r["index"], r["size"]) for r in res["search"]}
    assert ("exact", 1000) in kinds and ("hnsw", 1000) in kinds
    for r in res["search"]:
        assert 0 <= r["top1_agreement"] <= 100
    md = (tmp_path / "latency.md").read_text()
    assert "One frame, per stage" in md and "Search: exact vs HNSW" in md
    for png in ("latency_stages.png", "search_tradeoff.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_recall_smoke(tmp_path, tiny_checkpoint):
    _run(
        "recall.py",
        "--smoke",
        "--limit",
        "12",
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
    )
    res = json.loads((tmp_path / "recall.json").read_text())
    assert len(res["pairings"]) == 4
    done = {(r["dim"], r["backend"]) for r in res["rows"] if "recall" in r}
    assert {
        (16, "PyTorch FP32"),
        (16, "ONNX FP32"),
        (16, "ONNX FP16"),
        ("none", "PyTorch FP32"),
    } <= done
    for r in res["rows"]:
        for rec in r.get("recall", {}).values():
            for key, v in rec.items():
                if key != "top1":
                    assert 0 <= v["1"] <= v["5"] <= v["10"] <= 100
    fp32 = next(h for h in res["headline"] if h["backend"] == "ONNX FP32")
    assert fp32["min_cos"] >= 0.9999
    assert any("skipped" in r and r["dim"] == 4096 for r in res["rows"])  # above the model's 16
    for i in range(4):
        assert (tmp_path / f"recall_pr_{i}.png").read_bytes()[:4] == b"\x89PNG"
