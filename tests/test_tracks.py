"""Tracks (CSV/GPX) and timestamp-to-position interpolation: gaps and frames outside."""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError
from sfrs_edge.video.tracks import Track

GPX_11 = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
 <trk><trkseg>
  <trkpt lat="-27.4770" lon="153.0280"><ele>10</ele><time>2024-05-01T10:00:00Z</time></trkpt>
  <trkpt lat="-27.4780" lon="153.0290"><time>2024-05-01T10:00:02Z</time></trkpt>
  <trkpt lat="-27.4790" lon="153.0300"><time>2024-05-01T10:00:04Z</time></trkpt>
 </trkseg></trk>
</gpx>
"""


def csv_track(tmp_path, text: str) -> Track:
    p = tmp_path / "track.csv"
    p.write_text(text)
    return Track.read(p)


def test_linear_interpolation_between_fixes(tmp_path):
    tr = csv_track(tmp_path, "t,x,y,heading\n0,0,0,350\n2,10,4,10\n4,10,8,\n")
    assert tr.kind == "xy" and len(tr) == 3
    mid = tr.at(1.0).pose
    assert mid.position == pytest.approx((5.0, 2.0)) and mid.kind == "xy"
    assert mid.heading == pytest.approx(0.0, abs=1e-9)  # 350 -> 10 along the short arc
    assert tr.at(0.5).pose.heading == pytest.approx(355.0)
    assert tr.at(3.0).pose.position == pytest.approx((10.0, 6.0))
    exact = tr.at(2.0).pose
    assert exact.position == (10.0, 4.0) and exact.heading == 10.0
    assert tr.at(4.0).pose.position == (10.0, 8.0)  # last fix itself is inside


def test_frames_outside_the_track_are_refused(tmp_path):
    tr = csv_track(tmp_path, "time,x,y\n1,0,0\n3,2,0\n")
    for t in (0.0, 0.999, 3.001, 100.0):
        found = tr.at(t)
        assert found.pose is None and found.reason == "outside"
    assert tr.at(0.0, offset=1.0).pose.position == (0.0, 0.0)  # offset shifts video time
    assert tr.at(2.5, offset=-0.5).pose.position == pytest.approx((1.0, 0.0))


def test_gaps_longer_than_max_gap_are_refused(tmp_path):
    tr = csv_track(tmp_path, "t,x,y\n0,0,0\n1,1,0\n11,11,0\n12,12,0\n")
    assert tr.at(0.5, max_gap=5).pose.position == pytest.approx((0.5, 0.0))
    inside_gap = tr.at(6.0, max_gap=5)
    assert inside_gap.pose is None and inside_gap.reason == "gap"
    assert tr.at(6.0, max_gap=10).pose.position == pytest.approx((6.0, 0.0))
    assert tr.at(11.5, max_gap=5).pose.position == pytest.approx((11.5, 0.0))


def test_unsorted_and_duplicate_times(tmp_path):
    tr = csv_track(tmp_path, "t,x,y\n2,2,0\n0,0,0\n2,99,0\n1,1,0\n")
    assert list(tr.times) == [0, 1, 2]
    assert tr.at(2.0).pose.position == (2.0, 0.0)  # first fix at t=2 wins


def test_iso_times_count_from_the_first_fix(tmp_path):
    tr = csv_track(
        tmp_path,
        "timestamp,lat,lon\n2024-05-01T10:00:10+00:00,1.0,2.0\n2024-05-01T10:00:20+00:00,1.1,2.2\n",
    )
    assert tr.kind == "latlon" and list(tr.times) == [0.0, 10.0]
    assert tr.at(5.0).reason == "gap"  # 10 s between fixes > default max_gap 5 s
    assert tr.at(5.0, max_gap=20).pose.position == pytest.approx((1.05, 2.1))


def test_gpx_1_1_and_1_0(tmp_path):
    p = tmp_path / "t.gpx"
    p.write_text(GPX_11)
    tr = Track.read(p)
    assert tr.kind == "latlon" and list(tr.times) == [0.0, 2.0, 4.0]
    assert tr.at(1.0).pose.position == pytest.approx((-27.4775, 153.0285))
    assert tr.at(4.5).reason == "outside"
    p.write_text(
        GPX_11.replace("http://www.topografix.com/GPX/1/1", "http://www.topografix.com/GPX/1/0")
    )
    assert np.allclose(Track.read(p).positions, tr.positions)


@pytest.mark.parametrize(
    "name,text,msg",
    [
        ("a.csv", "x,y\n1,2\n", "time column"),
        ("a.csv", "t,a,b\n1,2,3\n", "lat,lon or x,y"),
        ("a.csv", "t,x,y\n1,2\n", "line 2: 2 fields"),
        ("a.csv", "t,x,y\nsoon,2,3\n", "neither seconds nor"),
        ("a.csv", "t,x,y\n1,two,3\n", "not a number"),
        ("a.csv", "t,x,y\n", "no rows"),
        ("a.csv", "t,x,y\n1,0,0\n2024-01-01T00:00:00,1,1\n", "mixes"),
        ("a.gpx", "<gpx><trk><trkseg><trkpt lat='1' lon='2'/></trkseg></trk></gpx>", "no <time>"),
        ("a.gpx", "<gpx><trk>", "not valid GPX"),
        ("a.gpx", "<gpx></gpx>", "no <trkpt>"),
    ],
)
def test_bad_tracks_name_the_problem(tmp_path, name, text, msg):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        Track.read(p)


def test_missing_track_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Track.read(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="not found"):
        Track.read(tmp_path / "nope.gpx")
