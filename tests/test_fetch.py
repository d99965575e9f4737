"""`benchbox data fetch` / `data verify` machinery (benchbox_xray.fetch) against a local HTTP server
on 127.0.0.1 serving small archives built here. No network, no framework imports."""

import dataclasses
import hashlib
import io
import json
import socket
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchbox.errors import DataError
from benchbox_xray.fetch import COHEN, KERMANY, render_verify
from benchbox_xray.manifest import FORMAT, make_manifest

TOP = "covid-chestxray-dataset-0f7245db"  # GitHub names the archive's top folder after the commit
FILES = {
    "metadata.csv": b"patientid,finding,filename,view,modality\n"
    b"1,COVID-19,a.jpg,PA,X-ray\n2,No Finding,b.jpg,AP,X-ray\n",
    "images/a.jpg": b"\xff\xd8a" + bytes(range(256)) * 400,
    "images/b.jpg": b"\xff\xd8b" + bytes(range(255, -1, -1)) * 400,
    "README.md": b"# covid-chestxray-dataset\n",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(files=FILES, top=TOP, extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(f"{top}/{rel}", data)
        for name, data in (extra or {}).items():
            z.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as written ("../x", "/x")
    return buf.getvalue()


class Server:
    """Serves ``files`` (URL path -> bytes); ``truncate[path] = n`` cuts the next n responses half way."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: Counter = Counter()
        self.hits: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate[self.path] > 0:
                    server.truncate[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True  # the connection drops with half the announced bytes
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy_no_overrides(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("BENCHBOX_COHEN_URL", "BENCHBOX_COHEN_SHA256", "BENCHBOX_KERMANY_URL", "BENCHBOX_KERMANY_SHA256"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def source(url, known_hash=None, manifest=None, retries=0):
    # manifest_path is always set explicitly: the shipped manifest must not decide what these tests see
    return dataclasses.replace(
        COHEN,
        url=url,
        known_hash=known_hash,
        retries=retries,
        timeout=5,
        manifest_path=manifest or Path("/nonexistent/manifest-cohen.json"),
    )


def snapshot(root: Path):
    if not root.exists():
        return None
    return sorted((p.relative_to(root).as_posix(), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def write_manifest(path: Path, files: dict[str, bytes]) -> Path:
    path.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "source": "cohen",
                "version": "test",
                "folder": COHEN.folder,
                "algorithm": "sha256",
                "files": {k: sha256(v) for k, v in files.items()},
            }
        )
    )
    return path


def test_good_download_is_extracted_into_the_layout_and_verifies(server, tmp_path):
    body = make_zip()
    server.files["/cohen.zip"] = body
    root = tmp_path / "data"
    (root / COHEN.folder).mkdir(parents=True)
    (root / COHEN.folder / "stale.txt").write_text("an older copy, replaced by the fetch")
    calls = []
    src = source(server.url("/cohen.zip"), "sha256:" + sha256(body), write_manifest(tmp_path / "m.json", FILES))

    target = src.fetch(root, lambda done, total: calls.append((done, total)))

    assert target == root / "covid-chestxray-dataset"
    assert (target / "metadata.csv").read_bytes() == FILES["metadata.csv"]
    assert (target / "images" / "a.jpg").read_bytes() == FILES["images/a.jpg"]
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["covid-chestxray-dataset"]  # no archive, temp or old folder
    assert calls[-1] == (len(body), len(body)) and all(t == len(body) for _, t in calls)

    report = src.verify(root)
    assert report.ok and report.checked == len(FILES) and not (report.missing or report.changed or report.extra)
    assert "OK: 4 file(s) match the manifest" in render_verify(report)


def test_verify_without_a_shipped_manifest_says_so_and_checks_the_layout(server, tmp_path):
    body = make_zip()
    server.files["/cohen.zip"] = body
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": FORMAT, "source": "cohen", "files": {}}))
    for manifest in (empty, tmp_path / "absent.json"):
        root = tmp_path / manifest.stem
        src = source(server.url("/cohen.zip"), manifest=manifest)  # unpinned, like GitHub's generated archive
        src.fetch(root)
        report = src.verify(root)
        assert report.ok and report.checked == 0
        assert any("no manifest is shipped" in n and "NOT verified" in n for n in report.notes), report.notes
        assert "contents NOT verified" in render_verify(report)

        (root / "covid-chestxray-dataset" / "metadata.csv").unlink()
        report = src.verify(root)
        assert not report.ok and report.missing == ["covid-chestxray-dataset/metadata.csv"]


def test_hash_mismatch_names_both_hashes_and_leaves_the_root_unchanged(server, tmp_path):
    good = make_zip()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    server.files["/cohen.zip"] = bytes(bad)
    root = tmp_path / "data"
    (root / COHEN.folder).mkdir(parents=True)
    (root / COHEN.folder / "metadata.csv").write_text("the user's copy")
    before = snapshot(root)

    with pytest.raises(DataError) as exc:
        source(server.url("/cohen.zip"), "sha256:" + sha256(good)).fetch(root)
    msg = str(exc.value)
    assert sha256(good) in msg and sha256(bytes(bad)) in msg and server.url("/cohen.zip") in msg
    assert "Nothing was extracted" in msg
    assert snapshot(root) == before

    fresh = tmp_path / "fresh"
    with pytest.raises(DataError):
        source(server.url("/cohen.zip"), sha256(good)).fetch(fresh)  # a bare hex digest works too
    assert not fresh.exists()


def test_interrupted_download_completes_on_the_next_call(server, tmp_path):
    body = make_zip()
    server.files["/cohen.zip"] = body
    server.truncate["/cohen.zip"] = 1
    root = tmp_path / "data"
    root.mkdir()
    src = source(server.url("/cohen.zip"), sha256(body), retries=0)

    with pytest.raises(DataError) as exc:
        src.fetch(root)
    assert server.url("/cohen.zip") in str(exc.value)
    assert list(root.iterdir()) == []  # the partial download was a temporary file, and it is gone

    target = src.fetch(root)
    assert (target / "metadata.csv").read_bytes() == FILES["metadata.csv"]
    assert server.hits["/cohen.zip"] == 2


def test_interrupted_download_is_retried_within_one_call(server, tmp_path):
    body = make_zip()
    server.files["/cohen.zip"] = body
    server.truncate["/cohen.zip"] = 1
    target = source(server.url("/cohen.zip"), sha256(body), retries=1).fetch(tmp_path / "data")
    assert (target / "images" / "b.jpg").read_bytes() == FILES["images/b.jpg"]
    assert server.hits["/cohen.zip"] == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_names_the_url_the_home_and_the_layout(tmp_path, server):
    root = tmp_path / "data"
    for url in (f"http://127.0.0.1:{free_port()}/cohen.zip", server.url("/missing.zip")):  # refused; HTTP 404
        with pytest.raises(DataError) as exc:
            source(url).fetch(root)
        msg = str(exc.value)
        assert f"It needs: {url}" in msg and COHEN.home in msg
        assert "covid-chestxray-dataset/metadata.csv and covid-chestxray-dataset/images/" in msg
        assert "--data-dir" in msg and str(root) in msg
        assert not root.exists()


@pytest.mark.parametrize("evil", ["../evil.txt", f"{TOP}/../../evil.txt", "/tmp/benchbox-evil.txt"])
def test_zip_slip_is_refused_before_anything_is_extracted(server, tmp_path, evil):
    body = make_zip(extra={evil: b"pwned"})
    server.files["/cohen.zip"] = body
    root = tmp_path / "sub" / "data"
    root.mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        source(server.url("/cohen.zip"), sha256(body)).fetch(root)  # the hash matches: the archive itself is bad
    assert evil in str(exc.value) and "outside" in str(exc.value)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()
    assert not Path("/tmp/benchbox-evil.txt").exists()


def test_content_that_differs_from_the_manifest_is_not_installed(server, tmp_path):
    changed = {**FILES, "images/a.jpg": b"\xff\xd8 other bytes"}
    server.files["/cohen.zip"] = make_zip({k: v for k, v in changed.items() if k != "README.md"})
    root = tmp_path / "data"
    root.mkdir()
    src = source(server.url("/cohen.zip"), manifest=write_manifest(tmp_path / "m.json", FILES))
    with pytest.raises(DataError) as exc:
        src.fetch(root)
    msg = str(exc.value)
    assert "images/a.jpg" in msg and "README.md" in msg and "1 file(s) missing" in msg and "1 changed" in msg
    assert list(root.iterdir()) == []


def test_an_archive_without_a_top_folder_is_installed_too(server, tmp_path):
    server.files["/flat.zip"] = make_zip(top=".")
    target = source(server.url("/flat.zip")).fetch(tmp_path / "data")
    assert (target / "images" / "a.jpg").is_file() and sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "covid-chestxray-dataset"
    ]


def test_not_a_zip_or_no_layout_inside_is_refused(server, tmp_path):
    root = tmp_path / "data"
    server.files["/page.html"] = b"<html>a login page instead of the archive</html>"
    server.files["/other.zip"] = make_zip({"notes.txt": b"x"})
    for path, needle in (("/page.html", "not a readable zip archive"), ("/other.zip", "holds no folder with")):
        with pytest.raises(DataError, match=needle):
            source(server.url(path)).fetch(root)
        assert not root.exists()


def test_verify_names_missing_changed_and_extra_files(tmp_path):
    base = tmp_path / "data" / COHEN.folder
    for rel, data in FILES.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    manifest = tmp_path / "m.json"
    manifest.write_text(make_manifest(base, "cohen", COHEN.folder, "test").to_json())
    (base / ".git").mkdir()
    (base / ".git" / "HEAD").write_text("a checkout's metadata is not content")
    src = dataclasses.replace(COHEN, manifest_path=manifest)
    assert src.verify(tmp_path / "data").ok

    (base / "README.md").unlink()
    (base / "images" / "a.jpg").write_bytes(b"edited")
    (base / "images" / "new.png").write_bytes(b"added")
    report = src.verify(tmp_path / "data")
    assert not report.ok and report.checked == 3
    assert report.missing == ["covid-chestxray-dataset/README.md"]
    assert report.changed == ["covid-chestxray-dataset/images/a.jpg"]
    assert report.extra == ["covid-chestxray-dataset/images/new.png"]
    text = render_verify(report)
    for line in (
        "FAILED: 1 missing, 1 changed; 1 extra file(s)",
        "missing: covid-chestxray-dataset/README.md",
        "changed: covid-chestxray-dataset/images/a.jpg",
        "extra: covid-chestxray-dataset/images/new.png",
    ):
        assert line in text

    report = KERMANY.verify(tmp_path / "data")
    assert not report.ok and report.missing == ["chest_xray/"] and "benchbox data fetch kermany" in report.notes[0]


def test_a_malformed_manifest_is_a_data_error(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"format": FORMAT, "files": {"a": "not-a-hash"}}))
    (tmp_path / "data" / COHEN.folder / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="not a valid benchbox data manifest"):
        dataclasses.replace(COHEN, manifest_path=bad).verify(tmp_path / "data")


def test_environment_points_a_shipped_source_at_a_mirror(server, tmp_path, monkeypatch):
    body = make_zip()
    server.files["/mirror/cohen.zip"] = body
    monkeypatch.setenv("BENCHBOX_COHEN_URL", server.url("/mirror/cohen.zip"))
    monkeypatch.setenv("BENCHBOX_COHEN_SHA256", sha256(b"something else"))
    src = dataclasses.replace(COHEN, retries=0, manifest_path=None)
    with pytest.raises(DataError, match=sha256(b"something else")):
        src.fetch(tmp_path / "data")
    monkeypatch.setenv("BENCHBOX_COHEN_SHA256", sha256(body))
    assert (src.fetch(tmp_path / "data") / "metadata.csv").is_file()


def test_the_plugin_offers_both_sources_through_the_hook():
    import pluggy

    import benchbox_xray
    from benchbox import hookspecs
    from benchbox.contracts import DataSource

    pm = pluggy.PluginManager("benchbox")
    pm.add_hookspecs(hookspecs)
    pm.register(benchbox_xray)
    sources = {s.name: s for contributed in pm.hook.benchbox_data_sources() for s in contributed}
    assert set(sources) == {"cohen", "kermany"} and all(isinstance(s, DataSource) for s in sources.values())
    for s in sources.values():
        assert s.description and s.home and s.layout and s.url.startswith("https://")
        assert s.manifest_path.is_file()  # the shipped manifest (possibly still empty: see docs/datasets.md)
