"""``sfrs-edge demo``: arguments checked before any work, and a user's files never replaced."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sfrs_edge import paths
from sfrs_edge.cli import demo_home, main
from sfrs_edge.errors import ConfigError


@pytest.fixture
def no_work(monkeypatch):
    """Any step of the demo's work fails the test: reading (or downloading) the dataset."""
    import sfrs_edge.datasets as datasets

    def forbidden(*a, **k):
        raise AssertionError("the demo started working before rejecting its arguments")

    monkeypatch.setattr(datasets, "gardens_point", forbidden)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frame", "500"], "500 is not in the range 0<=x<=199"),
        (["--frame", "-1"], "not in the range"),
        (["--pca-dim", "300"], "at most 199"),
        (["--query-set", "dusk"], "'dusk' is not one of"),
        (["--window", "0"], "--window"),
        (["--rerank", "0"], "--rerank"),
    ],
)
def test_bad_arguments_fail_before_any_work(no_work, args, message):
    r = CliRunner().invoke(main, ["demo", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not paths.home().exists()  # nothing written either


def test_a_users_model_and_map_are_not_replaced_without_force(no_work):
    home = paths.home()
    home.mkdir(parents=True)
    (home / "model.onnx").write_bytes(b"the user's own model")
    (home / "map").mkdir()
    (home / "map" / "manifest.json").write_text("{}")
    r = CliRunner().invoke(main, ["demo"])
    assert r.exit_code == 1
    assert "model.onnx, map already there and not made by an earlier demo" in r.output
    assert "--force" in r.output and "SFRS_EDGE_HOME=" in r.output
    assert (home / "model.onnx").read_bytes() == b"the user's own model"
    # with --force the demo goes on to work (here: into the forbidden dataset step)
    r = CliRunner().invoke(main, ["demo", "--force"])
    assert r.exit_code == 2 and "started working" in r.output


def test_files_an_earlier_demo_wrote_are_replaced_with_a_note(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "model.onnx").write_bytes(b"demo model")
    (home / "demo_map.png").write_bytes(b"png")
    assert demo_home.check_home(tmp_path / "fresh", force=False) == []
    with pytest.raises(ConfigError, match="model.onnx, demo_map.png"):
        demo_home.check_home(home, force=False)
    demo_home.record(home)
    assert demo_home.check_home(home, force=False) == ["model.onnx", "demo_map.png"]
    (home / "model.onnx").write_bytes(b"the user exported over it")
    with pytest.raises(ConfigError, match="model.onnx already there"):
        demo_home.check_home(home, force=False)
    assert demo_home.check_home(home, force=True) == ["model.onnx", "demo_map.png"]
