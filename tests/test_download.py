"""The downloader against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest

from sfrs_edge import weights
from sfrs_edge.download import DownloadError, Remote, download, fetch, part_path

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all-equal bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """``/good`` (Range-aware), ``/truncated`` (promises more than it sends), ``/stall``
    (headers, then silence), ``/norange`` (ignores Range); anything else is 404."""

    server_version = "test"
    requests: list[dict] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path == "/good":
            return self._send(PAYLOAD, honour_range=True)
        if self.path == "/norange":
            return self._send(PAYLOAD, honour_range=False)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return None
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            time.sleep(3)
            return None
        self.send_error(404, "Not Found")
        return None

    def _send(self, data: bytes, honour_range: bool):
        rng = self.headers.get("Range")
        if rng and honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_verified_and_atomic(server, tmp_path):
    seen = []
    dest = download(
        f"{server}/good",
        tmp_path / "w" / "model.pth",
        sha256=SHA,
        size=len(PAYLOAD),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert dest.read_bytes() == PAYLOAD
    assert _files(tmp_path / "w") == ["model.pth"]  # no part file left
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_hash_prefix_convention(server, tmp_path):
    dest = download(f"{server}/good", tmp_path / "x.pth", sha256_prefix=SHA[:8])
    assert dest.read_bytes() == PAYLOAD


def test_wrong_hash_deletes_everything(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 .* does not match") as exc:
        download(f"{server}/good", tmp_path / "w" / "m.pth", sha256_prefix="397923af")
    assert "\n" not in str(exc.value)
    assert _files(tmp_path / "w") == []


def test_wrong_size_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="more than the 1000"):
        download(f"{server}/good", tmp_path / "w" / "m.pth", size=1000)
    assert not (tmp_path / "w" / "m.pth").exists()


def test_404_is_one_line_with_url_and_path(server, tmp_path):
    dest = tmp_path / "w" / "m.pth"
    with pytest.raises(DownloadError) as exc:
        download(f"{server}/missing", dest, what="test weights")
    msg = str(exc.value)
    assert "HTTP 404" in msg and f"{server}/missing" in msg and str(dest) in msg
    assert "\n" not in msg
    assert _files(tmp_path / "w") == []


def test_truncated_transfer_fails_after_retries_and_keeps_part(server, tmp_path):
    dest = tmp_path / "w" / "m.pth"
    with pytest.raises(DownloadError, match=r"got \d+ of 1048576 bytes|broke off"):
        download(f"{server}/truncated", dest, retries=1, timeout=5)
    assert not dest.exists()
    assert 0 < part_path(dest).stat().st_size < len(PAYLOAD)  # kept for a later resume
    # the second attempt asked to resume where the first stopped
    ranges = [r["range"] for r in Handler.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")


def test_resume_after_partial_file(server, tmp_path):
    dest = tmp_path / "w" / "m.pth"
    dest.parent.mkdir()
    part_path(dest).write_bytes(PAYLOAD[:300_000])
    download(f"{server}/good", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert Handler.requests[-1]["range"] == "bytes=300000-"
    assert _files(dest.parent) == ["m.pth"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "m.pth"
    part_path(dest).write_bytes(b"garbage" * 1000)
    download(f"{server}/norange", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD


def test_stalling_server_times_out(server, tmp_path):
    dest = tmp_path / "w" / "m.pth"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="no data for 0.5 s|timed out"):
        download(f"{server}/stall", dest, timeout=0.5, retries=0)
    assert time.monotonic() - t0 < 2.5
    assert not dest.exists()


def test_offline_error_is_one_line_with_url_and_hand_path(tmp_path):
    # a closed local port stands for "no network": connection refused, nothing leaves the machine
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/vgg16-397923af.pth"
    dest = tmp_path / "weights" / "vgg16-397923af.pth"
    with pytest.raises(DownloadError) as exc:
        fetch(Remote(url, dest.name, "VGG16 weights"), dest.parent, timeout=2)
    msg = str(exc.value)
    assert url in msg and str(dest) in msg and "\n" not in msg


def test_published_weights_cache_and_mirror(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SFRS_EDGE_HOME", str(tmp_path / "home"))
    # the real torchvision entry keeps its checks when fetched from a mirror: our payload fails
    with pytest.raises(DownloadError, match="expected 553433881|more than"):
        weights.published_weights("vgg16", url=f"{server}/good")
    assert not weights.cached_path("vgg16").exists()
    # no published checksum (OpenIBL): downloaded into the cache, then found there
    path = weights.published_weights("openibl", url=f"{server}/good")
    assert path == tmp_path / "home" / "weights" / "vgg16_netvlad.pth"
    n = len(Handler.requests)
    assert weights.published_weights("openibl", url=f"{server}/good") == path
    assert len(Handler.requests) == n  # cached: no second request


def test_published_entries_follow_torchvision_convention():
    vgg = weights.PUBLISHED["vgg16"]
    assert vgg.url.endswith(vgg.filename)
    assert vgg.sha256.startswith(vgg.filename.split("-")[1].split(".")[0])
    assert weights.PUBLISHED["openibl"].url == (
        "https://github.com/yxgeee/OpenIBL/releases/download/v0.1.0-beta/vgg16_netvlad.pth"
    )


def test_cli_import_downloads_checks_and_forgets_a_bad_file(server, tmp_path, monkeypatch):
    """`import --from openibl` with no FILE: downloads into the cache; a file the importer
    rejects is deleted so the next run downloads again. The URL points at the local server."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    monkeypatch.setenv("SFRS_EDGE_HOME", str(tmp_path / "home"))
    remote = weights.PUBLISHED["openibl"]
    monkeypatch.setitem(
        weights.PUBLISHED, "openibl", Remote(f"{server}/good", remote.filename, remote.what)
    )
    r = CliRunner().invoke(main, ["import", "--from", "openibl"])
    assert r.exit_code == 1
    err = r.output.strip().splitlines()[-1]
    assert err.startswith("error: ") and "deleted the downloaded" in err
    assert not weights.cached_path("openibl").exists()
    assert Handler.requests[0]["path"] == "/good"
