"""Training dataset adapters: dbStruct .mat, generic CSV, index-aligned traversals."""

from __future__ import annotations

import numpy as np
import pytest
from sfrs_edge.train.datasets import load_csv, load_dbstruct, load_traversals, parse_range

from sfrs_edge.errors import ConfigError


def write_dbstruct(path, layout="pitts"):
    from scipy.io import savemat

    db = np.array(["000/000000_pitch1_yaw1.jpg", "000/000001_pitch1_yaw2.jpg", "001/x.jpg"], object)
    q = np.array(["q/0.jpg", "q/1.jpg"], object)
    utm_db = np.array([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]])  # 2 x N as in the NetVLAD files
    utm_q = np.array([[11.0, 29.0], [1.5, 3.5]])
    if layout == "pitts":
        names = ["whichSet", "dbImage", "utmDb", "qImage", "utmQ", "numDb", "numQ", "posDistThr"]
        values = ["train", db, utm_db, q, utm_q, 3, 2, 25]
    else:  # tokyoTM: a timestamp field shifts the query fields by one
        names = ["whichSet", "dbImage", "utmDb", "dbTimeStamp", "qImage", "utmQ", "qTimeStamp"]
        values = ["train", db, utm_db, np.zeros(3), q, utm_q, np.zeros(2)]
    st = np.empty((1, 1), dtype=[(n, object) for n in names])
    for n, v in zip(names, values, strict=True):
        st[0, 0][n] = v
    savemat(path, {"dbStruct": st})


@pytest.mark.parametrize("layout", ["pitts", "tokyotm"])
def test_dbstruct_mat(tmp_path, layout):
    path = tmp_path / "pitts30k_train.mat"
    write_dbstruct(path, layout)
    ps = load_dbstruct(path, tmp_path / "images", tmp_path / "queries", layout=layout)
    assert ps.num_db == 3 and ps.num_queries == 2
    assert ps.db_paths[0] == tmp_path / "images" / "000/000000_pitch1_yaw1.jpg"
    assert ps.query_paths[1] == tmp_path / "queries" / "q/1.jpg"
    np.testing.assert_allclose(ps.db_pos, [[10, 1], [20, 2], [30, 3]])
    np.testing.assert_allclose(ps.query_pos, [[11, 1.5], [29, 3.5]])


def test_dbstruct_rejects_other_mat(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "x.mat", {"other": np.zeros(3)})
    with pytest.raises(ConfigError, match="not a NetVLAD dbStruct"):
        load_dbstruct(tmp_path / "x.mat", tmp_path, tmp_path)


def test_csv(tmp_path):
    (tmp_path / "d.csv").write_text(
        "path,easting,northing,role,split\n"
        "a.jpg,0,0,db,train\nb.jpg,5,5,query,train\nc.jpg,1,1,db,val\nd.jpg,2,2,query,val\n"
    )
    splits = load_csv(tmp_path / "d.csv")
    assert set(splits) == {"train", "val"}
    assert splits["train"].query_paths == [tmp_path / "b.jpg"]
    np.testing.assert_allclose(splits["val"].db_pos, [[1, 1]])
    (tmp_path / "bad.csv").write_text("path,position,role,split\na.jpg,0,both,train\n")
    with pytest.raises(ConfigError, match="role"):
        load_csv(tmp_path / "bad.csv")


def test_traversals(gardens_point):
    ps = load_traversals(gardens_point, "day_left", ["day_right", "night_right"], range(10, 20))
    assert ps.num_db == 10 and ps.num_queries == 20
    assert ps.db_paths[0].name == "Image010.jpg" and ps.db_paths[0].parent.name == "day_left"
    assert ps.query_paths[10].parent.name == "night_right"
    np.testing.assert_array_equal(ps.query_pos[:, 0], list(range(10, 20)) * 2)
    with pytest.raises(ConfigError, match="places up to"):
        load_traversals(gardens_point, "day_left", ["day_right"], range(150, 250))


def test_parse_range():
    assert parse_range("0-99") == range(0, 100)
    with pytest.raises(ConfigError):
        parse_range("5")
