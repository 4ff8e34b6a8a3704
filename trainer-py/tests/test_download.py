"""The shared-downloads lock: concurrent downloaders fetch an archive exactly once."""

import hashlib
import io
import multiprocessing as mp
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tb_trainer.config import Split
from tb_trainer.data.download import COMPLETE, DownloadError, fetch_archive
from tb_trainer.data.surface_water import SurfaceWaterDataModule


def _archive() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(12):
            for sub, arr in (("images", rng.random((6, 16, 16), dtype=np.float32)),
                             ("masks", (rng.random((16, 16)) > 0.7).astype(np.uint8))):
                b = io.BytesIO()
                np.save(b, arr)
                info = tarfile.TarInfo(f"water/{sub}/tile{i:02d}.npy")
                info.size = len(b.getvalue())
                tf.addfile(info, io.BytesIO(b.getvalue()))
    return buf.getvalue()


class _Server:
    """Serves one archive slowly (so downloads overlap) and counts the requests."""

    def __init__(self, payload: bytes):
        self.payload, self.requests = payload, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                for i in range(0, len(server.payload), 4096):
                    self.wfile.write(server.payload[i:i + 4096])
                    time.sleep(0.02)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/water.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _fetch(url, sha, downloads, start, queue):
    start.wait()
    try:
        path = fetch_archive(url, sha, Path(downloads), name="surface_water")
        queue.put(("ok", str(path)))
    except Exception as e:  # reported to the test
        queue.put(("error", repr(e)))


def test_two_concurrent_downloaders_download_once(tmp_path):
    payload = _archive()
    sha = hashlib.sha256(payload).hexdigest()
    ctx = mp.get_context("spawn")
    with _Server(payload) as server:
        start, queue = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_fetch, args=(server.url, sha, tmp_path, start, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        start.set()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        assert server.requests == 1, results
    assert [r[0] for r in results] == ["ok", "ok"], results
    assert results[0][1] == results[1][1]
    root = Path(results[0][1])
    assert (root / COMPLETE).exists()
    assert len(list((root / "water" / "images").iterdir())) == 12
    # Nothing half-done is left behind, and a later call does not download again.
    assert [p.name for p in (tmp_path / "archives").iterdir() if not p.name.endswith(".lock")] == [root.name]
    assert fetch_archive("http://127.0.0.1:1/unreachable", sha, tmp_path, name="surface_water") == root

    dm = SurfaceWaterDataModule(url="http://127.0.0.1:1/unused", sha256=sha, downloads_dir=str(tmp_path),
                                batch_size=4, split=Split(0.5, 0.25, 0.25))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.in_channels == 6 and len(dm.train_dataloader().dataset) == 6


def test_checksum_mismatch_leaves_nothing(tmp_path):
    payload = _archive()
    with _Server(payload) as server:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            fetch_archive(server.url, "0" * 64, tmp_path, name="surface_water")
    assert [p.name for p in (tmp_path / "archives").iterdir() if not p.name.endswith(".lock")] == []


def test_file_url(tmp_path):
    payload = _archive()
    src = tmp_path / "water.tar.gz"
    src.write_bytes(payload)
    root = fetch_archive(src.as_uri(), hashlib.sha256(payload).hexdigest(), tmp_path / "dl")
    assert (root / "water" / "masks" / "tile00.npy").exists()
