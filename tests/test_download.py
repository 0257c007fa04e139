import functools
import hashlib
import inspect
import os
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gdown
import pytest

from tfclip_plugin import download
from tfclip_plugin.download import (
    ChecksumError,
    DownloadError,
    KnownFile,
    fetch_file,
    fetch_known,
    resolve_source,
    sha256sum,
)

PAYLOAD = random.Random(0).randbytes(300_000)
GOOD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CORRUPT = PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:]
CORRUPT_SHA = hashlib.sha256(CORRUPT).hexdigest()
DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one response per connection, closed when the handler returns."""

    timeout = 5

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.path in ("/good.bin", "/weights/model.pth", "/get/?file=7"):
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/corrupt.bin":
            self._send(CORRUPT, len(CORRUPT))
        elif self.path == "/truncated.bin":
            self._send(PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD))
        else:
            self.send_error(404)

    def _send(self, body, announced_length):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced_length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.paths = []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch, tmp_path):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "env-cache"))


def _closed_port_url(path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_sha256sum_streams_in_chunks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert sha256sum(str(path), chunk_size=4096) == GOOD_SHA
    assert sha256sum(str(path)) == GOOD_SHA


def test_good_file_is_cached_with_its_content(server, tmp_path):
    cache = tmp_path / "cache"
    path = fetch_file(f"{server.base}/good.bin", GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert path == str(cache / "good.bin")
    with open(path, "rb") as stream:
        assert stream.read() == PAYLOAD
    assert sha256sum(path) == GOOD_SHA
    assert os.listdir(cache) == ["good.bin"]
    assert server.paths == ["/good.bin"]


def test_second_call_is_served_from_the_cache(server, tmp_path):
    cache = str(tmp_path / "cache")
    first = fetch_file(f"{server.base}/good.bin", GOOD_SHA.upper(), cache_dir=cache, quiet=True)
    second = fetch_file(f"{server.base}/good.bin", GOOD_SHA, cache_dir=cache, quiet=True)
    assert first == second
    assert server.paths == ["/good.bin"]


def test_default_cache_dir_comes_from_the_environment(server, tmp_path):
    path = fetch_file(f"{server.base}/weights/model.pth", GOOD_SHA, filename="vit.pth", quiet=True)
    assert path == str(tmp_path / "env-cache" / "vit.pth")
    assert server.paths == ["/weights/model.pth"]


def test_url_without_file_name_needs_a_filename(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="does not end in a file name; pass filename="):
        fetch_file(f"{server.base}/get/?file=7", GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert server.paths == [] and not cache.exists()
    path = fetch_file(f"{server.base}/get/?file=7", GOOD_SHA, cache_dir=str(cache), filename="seven.bin", quiet=True)
    assert path == str(cache / "seven.bin")
    assert sha256sum(path) == GOOD_SHA


def test_corrupted_download_raises_and_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.base}/corrupt.bin"
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {url}: expected {GOOD_SHA}, got {CORRUPT_SHA}") as info:
        fetch_file(url, GOOD_SHA, cache_dir=str(cache), quiet=True)
    message = str(info.value)
    assert f"{len(CORRUPT)} bytes" in message
    assert f"put it at {cache / 'corrupt.bin'}" in message
    assert os.listdir(cache) == []


def test_connection_dropped_mid_transfer_raises_and_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.base}/truncated.bin"
    with pytest.raises(DownloadError, match=f"downloading {url} failed") as info:
        fetch_file(url, GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert not isinstance(info.value, ChecksumError)
    assert os.listdir(cache) == []
    assert server.paths == ["/truncated.bin"]


def test_dropped_connection_is_caught_without_a_checksum(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="truncated.bin failed"):
        fetch_file(f"{server.base}/truncated.bin", None, cache_dir=str(cache), quiet=True)
    assert os.listdir(cache) == []


def test_http_error_names_the_url(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.base}/missing.bin"
    with pytest.raises(DownloadError, match=f"downloading {url} failed: 404"):
        fetch_file(url, GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert os.listdir(cache) == []


def test_cached_file_with_wrong_hash_is_downloaded_again(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "good.bin").write_bytes(CORRUPT)
    path = fetch_file(f"{server.base}/good.bin", GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert sha256sum(path) == GOOD_SHA
    assert server.paths == ["/good.bin"]
    assert os.listdir(cache) == ["good.bin"]


def test_cached_file_with_wrong_hash_offline_raises(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "good.bin").write_bytes(CORRUPT)
    with pytest.raises(DownloadError, match=f"sha256 {CORRUPT_SHA}, not the expected {GOOD_SHA}, and a fresh copy"):
        fetch_file(_closed_port_url("/good.bin"), GOOD_SHA, cache_dir=str(cache), quiet=True)
    assert os.listdir(cache) == ["good.bin"]
    assert (cache / "good.bin").read_bytes() == CORRUPT


def test_unverified_download_warns_with_its_hash(server, tmp_path):
    cache = str(tmp_path / "cache")
    with pytest.warns(UserWarning, match=f"its sha256 is {GOOD_SHA}"):
        path = fetch_file(f"{server.base}/good.bin", None, cache_dir=cache, quiet=True)
    assert fetch_file(f"{server.base}/good.bin", None, cache_dir=cache, quiet=True) == path
    assert server.paths == ["/good.bin"]


def test_plain_url_goes_through_gdown(server, tmp_path, monkeypatch):
    calls = []
    real = gdown.download

    @functools.wraps(real)
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(gdown, "download", spy)
    fetch_file(f"{server.base}/good.bin", GOOD_SHA, cache_dir=str(tmp_path), quiet=True)
    assert [(c["url"], c["use_cookies"], c["quiet"]) for c in calls] == [(f"{server.base}/good.bin", False, True)]
    if "timeout" in inspect.signature(real).parameters:
        assert calls[0]["timeout"] == download.READ_TIMEOUT_S


def test_drive_id_downloads_the_canonical_url(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, output, **options):
        calls.append((url, options["use_cookies"]))
        output.write(PAYLOAD)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    path = fetch_file(DRIVE_ID, GOOD_SHA, cache_dir=str(tmp_path), quiet=True)
    assert path == str(tmp_path / DRIVE_ID)
    assert calls == [(f"https://drive.google.com/uc?id={DRIVE_ID}", True)]
    assert fetch_file(f"https://drive.google.com/file/d/{DRIVE_ID}/view", GOOD_SHA, cache_dir=str(tmp_path)) == path
    assert len(calls) == 1


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted(url, output, **options):
        output.write(PAYLOAD[:1000])
        raise KeyboardInterrupt

    monkeypatch.setattr(gdown, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_file("http://127.0.0.1:1/model.pth", GOOD_SHA, cache_dir=str(tmp_path / "cache"), quiet=True)
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize(
    "source, expected",
    [
        (DRIVE_ID, (f"https://drive.google.com/uc?id={DRIVE_ID}", DRIVE_ID)),
        (f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing", (f"https://drive.google.com/uc?id={DRIVE_ID}", DRIVE_ID)),
        (f"https://drive.google.com/open?id={DRIVE_ID}", (f"https://drive.google.com/uc?id={DRIVE_ID}", DRIVE_ID)),
        ("https://example.org/a/ViT-B-16%20v2.pt?x=1", ("https://example.org/a/ViT-B-16%20v2.pt?x=1", "ViT-B-16 v2.pt")),
        ("https://example.org/get/?file=7", ("https://example.org/get/?file=7", None)),
    ],
)
def test_resolve_source(source, expected):
    assert resolve_source(source) == expected


@pytest.mark.parametrize(
    "source, message",
    [
        ("ftp://example.org/model.pth", "only http"),
        ("model.pth", "neither an http"),
        ("https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz0", "without a file id"),
    ],
)
def test_resolve_source_rejects(source, message):
    with pytest.raises(ValueError, match=message):
        resolve_source(source)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sha256": "abc"}, "64 hexadecimal"),
        ({"sha256": GOOD_SHA, "filename": "../escape.pth"}, "plain file name"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_file("http://127.0.0.1:1/model.pth", cache_dir=str(tmp_path), **kwargs)
    assert not any(tmp_path.iterdir())


def test_fetch_known(server, tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="no downloadable file named 'vit_mars'"):
        fetch_known("vit_mars", cache_dir=str(tmp_path))
    monkeypatch.setitem(download.KNOWN_FILES, "vit_mars", KnownFile(f"{server.base}/good.bin", GOOD_SHA, "test", "m.pth"))
    assert fetch_known("vit_mars", cache_dir=str(tmp_path), quiet=True) == str(tmp_path / "m.pth")
    assert server.paths == ["/good.bin"]
