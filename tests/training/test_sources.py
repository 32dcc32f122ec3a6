import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.sources import SourceError, download, download_name, resolve_source

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several progress-bar chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path == "/missing.zip":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path == "/partial.zip":
            # Promise the whole payload, send half, hang up: a dropped connection mid-download.
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: the OS picks a free one
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_writes_file_records_sha_and_shows_progress(server, tmp_path, capsys):
    base, _ = server
    path, sha = download(f"{base}/pets.zip", tmp_path / "raw")
    assert path == tmp_path / "raw" / "pets.zip"
    assert path.read_bytes() == PAYLOAD
    assert sha == PAYLOAD_SHA
    assert (tmp_path / "raw" / "pets.zip.sha256").read_text() == f"{PAYLOAD_SHA}  pets.zip\n"
    assert "download pets.zip" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["pets.zip", "pets.zip.sha256"]


def test_download_with_matching_expected_sha_succeeds(server, tmp_path):
    base, _ = server
    _, sha = download(f"{base}/pets.zip", tmp_path, expected_sha256=PAYLOAD_SHA.upper())
    assert sha == PAYLOAD_SHA


def test_already_downloaded_file_with_matching_sha_is_reused(server, tmp_path):
    base, requests = server
    download(f"{base}/pets.zip", tmp_path)
    download(f"{base}/pets.zip", tmp_path)
    download(f"{base}/pets.zip", tmp_path, expected_sha256=PAYLOAD_SHA)
    assert requests == ["/pets.zip"]


def test_changed_local_copy_is_downloaded_again(server, tmp_path):
    base, requests = server
    download(f"{base}/pets.zip", tmp_path)
    (tmp_path / "pets.zip").write_bytes(b"tampered")
    path, sha = download(f"{base}/pets.zip", tmp_path)
    assert len(requests) == 2
    assert path.read_bytes() == PAYLOAD and sha == PAYLOAD_SHA


def test_sha_mismatch_fails_naming_the_fix_and_leaves_no_file(server, tmp_path):
    base, _ = server
    with pytest.raises(SourceError, match=f"set data.sha256: {PAYLOAD_SHA}"):
        download(f"{base}/pets.zip", tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_partial_download_fails_and_leaves_no_file(server, tmp_path):
    base, _ = server
    with pytest.raises(SourceError, match="partial.zip failed"):
        download(f"{base}/partial.zip", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_error_fails_and_leaves_no_file(server, tmp_path):
    base, _ = server
    with pytest.raises(SourceError, match="404"):
        download(f"{base}/missing.zip", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_url_source_resolves_to_the_downloaded_archive(server, tmp_path):
    base, _ = server
    source = resolve_source(f"{base}/pets.zip", tmp_path / "raw")
    assert source.describe() == {
        "url": f"{base}/pets.zip",
        "path": str(tmp_path / "raw/pets.zip"),
        "sha256": PAYLOAD_SHA,
    }


def test_local_archive_sha_is_recorded_and_checked(tmp_path):
    archive = tmp_path / "pets.zip"
    archive.write_bytes(PAYLOAD)
    assert resolve_source(str(archive), tmp_path / "raw").sha256 == PAYLOAD_SHA
    with pytest.raises(SourceError, match="data.sha256"):
        resolve_source(str(archive), tmp_path / "raw", expected_sha256="f" * 64)
    assert not (tmp_path / "raw").exists()  # local sources are read in place, never copied


def test_missing_local_source_names_the_param_to_fix(tmp_path):
    with pytest.raises(SourceError, match="fix data.source in params.yaml"):
        resolve_source(str(tmp_path / "nope.zip"), tmp_path / "raw")


def test_directory_source_has_no_archive_sha(tmp_path):
    assert resolve_source(str(tmp_path), tmp_path / "raw").sha256 is None
    with pytest.raises(SourceError, match="set data.sha256: null"):
        resolve_source(str(tmp_path), tmp_path / "raw", expected_sha256="a" * 64)


def test_downloaded_file_is_named_after_the_url_path():
    assert download_name("https://example.org/a/kagglecatsanddogs_5340.zip?x=1") == "kagglecatsanddogs_5340.zip"
    assert download_name("https://example.org/") == "download"


def test_local_path_is_returned_unchanged(tmp_path: Path):
    archive = tmp_path / "pets.tar.gz"
    archive.write_bytes(b"x")
    assert resolve_source(str(archive), tmp_path / "raw").path == archive


def test_tilde_in_source_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Downloads").mkdir()
    (tmp_path / "Downloads/train.zip").write_bytes(PAYLOAD)
    source = resolve_source("~/Downloads/train.zip", tmp_path / "raw", root=tmp_path / "repo")
    assert source.location == tmp_path / "Downloads/train.zip"
    assert source.describe()["path"] == str(tmp_path / "Downloads/train.zip")
    assert source.sha256 == PAYLOAD_SHA


@pytest.mark.parametrize("written", ["$PETS/train.zip", "${PETS}/train.zip"])
def test_environment_variables_in_source_are_expanded(tmp_path, monkeypatch, written):
    monkeypatch.setenv("PETS", str(tmp_path))
    (tmp_path / "train.zip").write_bytes(PAYLOAD)
    assert resolve_source(written, tmp_path / "raw", root=tmp_path / "repo").location == tmp_path / "train.zip"


def test_unset_environment_variable_is_named_instead_of_read_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_PETS_DIR", raising=False)
    with pytest.raises(SourceError, match="unset environment variable.*NO_SUCH_PETS_DIR"):
        resolve_source("$NO_SUCH_PETS_DIR/train.zip", tmp_path / "raw")


def test_relative_source_is_read_from_dvc_root_and_recorded_as_written(tmp_path, monkeypatch):
    """`dvc exp run --temp` runs the stage in a copy elsewhere; DVC_ROOT is still the user's repo."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/pets.zip").write_bytes(PAYLOAD)
    repo, elsewhere = tmp_path / "repo", tmp_path / "exp-copy"
    repo.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    source = resolve_source("../shared/pets.zip", Path("data/raw"))
    assert source.location.resolve() == tmp_path / "shared/pets.zip"
    assert source.describe() == {"url": None, "path": "../shared/pets.zip", "sha256": PAYLOAD_SHA}


def test_relative_source_without_dvc_root_is_read_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "pets.zip").write_bytes(PAYLOAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert resolve_source("pets.zip", Path("raw")).sha256 == PAYLOAD_SHA


def test_url_is_downloaded_into_the_repo_not_the_temp_experiment_copy(server, tmp_path, monkeypatch):
    base, requests = server
    repo, elsewhere = tmp_path / "repo", tmp_path / "exp-copy"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    for _ in range(2):
        source = resolve_source(f"{base}/pets.zip", Path("data/raw"))
    assert requests == ["/pets.zip"]
    assert source.location == repo / "data/raw/pets.zip" and source.path == Path("data/raw/pets.zip")
    assert not (elsewhere / "data").exists()
