import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.cli import main
from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.core.errors import DataError, MnistLabError
from mnist_lab.core.idx import encode_idx
from mnist_lab.datasets import ingest as ingest_module
from mnist_lab.datasets.folder import (
    DATA_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    dvc_directory_md5,
    encode_dataset,
    read_dataset,
    read_directory_files,
    recorded_data_version,
)
from mnist_lab.datasets.ingest import MNIST_MD5, MNIST_MIRRORS, file_url, ingest, write_digits
from mnist_lab.system.redact import redact
from tests.helpers import copy_repository, free_port, random_images


@pytest.fixture
def mnist_shaped(tmp_path: Path) -> tuple[Path, Dataset]:
    """A folder with MNIST-shaped (28x28) IDX files, uncompressed, as some mirrors ship them."""
    train, train_labels = random_images(200, 28, 28, seed=1)
    test, test_labels = random_images(40, 28, 28, seed=2)
    folder = tmp_path / "source"
    folder.mkdir()
    for name, array in (
        (TRAIN_IMAGES, train),
        (TRAIN_LABELS, train_labels),
        (TEST_IMAGES, test),
        (TEST_LABELS, test_labels),
    ):
        (folder / name.removesuffix(".gz")).write_bytes(encode_idx(array))
    return folder, Dataset(train, train_labels, test, test_labels)


@pytest.fixture
def http_server(mnist_shaped: tuple[Path, Dataset]) -> Iterator[str]:
    folder, _ = mnist_shaped
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bundled_digits_regenerate_exactly_what_data_dvc_records(repo_root: Path, tmp_path: Path) -> None:
    md5 = write_digits(tmp_path / "data", repo_root / "data.dvc")
    assert md5 == recorded_data_version(repo_root / "data.dvc")


def test_digits_are_not_written_when_data_dvc_records_other_data(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    with pytest.raises(
        DataError,
        match=r"records data version 0123.*is not the bundled default.*data restore"
        r".*mnist-lab data digits --no-check && dvc add data",
    ):
        write_digits(tmp_path / "data", tmp_path / "data.dvc")
    assert not (tmp_path / "data").exists()


def test_other_data_is_not_blamed_on_the_environment(tmp_path: Path) -> None:
    """A data.dvc recording another size than the digits' is other data: the message blamed a possibly
    different environment too (`make venv`), which cannot be the cause."""
    digits = encode_dataset(digits_dataset())
    size = sum(len(content) for content in digits.values())
    for nfiles, nbytes, blames_environment in ((4, 196_000, False), (4, size, True)):
        (tmp_path / "data.dvc").write_text(
            f"outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: {nbytes}\n  nfiles: {nfiles}\n"
            "  path: data\n"
        )
        with pytest.raises(DataError) as refused:
            write_digits(tmp_path / "data", tmp_path / "data.dvc")
        assert ("`make venv`" in str(refused.value)) is blames_environment


def test_a_broken_dvc_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("just text\n")
    with pytest.raises(DataError, match="data.dvc: not a valid .dvc file"):
        recorded_data_version(tmp_path / "data.dvc")


def test_ingest_from_a_folder_normalises_to_gzip(mnist_shaped: tuple[Path, Dataset], tmp_path: Path) -> None:
    folder, dataset = mnist_shaped
    ingest(str(folder), tmp_path / "data")
    assert sorted(read_directory_files(tmp_path / "data")) == sorted(encode_dataset(dataset))
    loaded = read_dataset(tmp_path / "data")
    assert loaded.image_shape == (28, 28) and np.array_equal(loaded.test_images, dataset.test_images)


def test_ingest_from_a_url(http_server: str, mnist_shaped: tuple[Path, Dataset], tmp_path: Path) -> None:
    _, dataset = mnist_shaped
    md5 = ingest(http_server, tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    assert md5.endswith(".dir")
    # a base URL with a query (an access token): each file's name goes into the path, the query stays one
    # (it asked for `/?token=abc/train-images-idx3-ubyte.gz`: "none of them is at that URL")
    assert ingest(f"{http_server}/?token=abc", tmp_path / "again") == md5
    assert (
        file_url("https://u:p%40w@host/mnist/?token=a/b#x", "t.gz")
        == "https://u:p%40w@host/mnist/t.gz?token=a/b#x"
    )


def test_ingest_of_a_corrupt_source_leaves_data_untouched(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, small_digits: Dataset
) -> None:
    folder, _ = mnist_shaped
    ingest(str(folder), tmp_path / "data")
    before = read_directory_files(tmp_path / "data")
    (folder / TRAIN_LABELS.removesuffix(".gz")).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
    with pytest.raises(DataError, match=r"ingest .*train-labels-idx1-ubyte: truncated"):
        ingest(str(folder), tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == before


def test_ingest_errors_for_missing_sources(tmp_path: Path, http_server: str) -> None:
    with pytest.raises(DataError, match=r"'.*nowhere': no such folder; give a folder holding MNIST's four"):
        ingest(str(tmp_path / "nowhere"), tmp_path / "data")
    looked_for = (
        "no MNIST training files there: looked for train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz "
        "(or the same without .gz, or named like train-images.idx3-ubyte); "
    )
    with pytest.raises(DataError) as missing:
        ingest(f"{http_server}/missing", tmp_path / "data")
    assert (
        str(missing.value)
        == f"ingest {http_server}/missing: {looked_for}none of them is at that URL (HTTP 404 for each, "
        "or 403 as a bucket answers for a file it does not have: a private one needs user:password in "
        "the URL)"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as empty:
        ingest(str(tmp_path / "empty"), tmp_path / "data")
    assert str(empty.value) == f"ingest {tmp_path / 'empty'}: {looked_for}the folder is empty"
    (tmp_path / "other").mkdir()
    for name in ("train.csv", "README"):
        (tmp_path / "other" / name).write_text("x")
    with pytest.raises(
        DataError,
        match=r"the folder holds README, train.csv \(CSV files, such as Kaggle.s mnist_train.csv, are not "
        r"read: "
        r"give MNIST's IDX files, or `mnist` to download them\)$",
    ):
        ingest(str(tmp_path / "other"), tmp_path / "data")
    (tmp_path / "other" / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match=r"has train-images-idx3-ubyte.gz but not train-labels-idx1-ubyte.gz"):
        ingest(str(tmp_path / "other"), tmp_path / "data")
    with pytest.raises(DataError, match=r"is a file: give the folder holding MNIST's four IDX files") as file:
        ingest(str(tmp_path / "other" / "README"), tmp_path / "data")
    assert str(tmp_path / "other") + "'" not in str(file.value)  # its folder holds no IDX files: not offered
    with pytest.raises(DataError, match="cannot download"):
        ingest("http://127.0.0.1:9/", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_openml_mnist_is_split_60000_10000(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenML cannot be reached here: stand in for scikit-learn's fetcher with MNIST's shape and types."""
    import sklearn.datasets
    from sklearn.utils import Bunch

    pixels = np.zeros((70000, 784), dtype=np.float64)
    pixels[:, 0] = np.arange(70000) % 256
    target = np.array([str(i % 10) for i in range(70000)], dtype=object)  # OpenML's labels are strings
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", lambda *a, **k: Bunch(data=pixels, target=target))
    ingest("openml", tmp_path / "data")
    loaded = read_dataset(tmp_path / "data")
    assert loaded.train_images.shape == (60000, 28, 28) and loaded.test_images.shape == (10000, 28, 28)
    assert loaded.test_labels[:3].tolist() == [0, 1, 2] and loaded.test_images[0, 0, 0] == 60000 % 256


def test_openml_offline_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(
        DataError, match="cannot fetch mnist_784 from OpenML .*name resolution.*are you online"
    ):
        ingest("openml", tmp_path / "data")
    assert not (tmp_path / "data").exists()


# `mnist-lab data ingest mnist`: the official files from mirrors, here local servers on 127.0.0.1.


@dataclass
class Mirror:
    """A local MNIST mirror: what it serves, how it misbehaves, and the file names it was asked for."""

    files: dict[str, bytes]
    truncate: set[str] = field(default_factory=set)  # sent with a Content-Length twice the body
    errors: dict[str, int] = field(default_factory=dict)  # name -> HTTP status; absent files are a 404
    broken_off: set[str] = field(default_factory=set)  # sent chunked, one chunk, then the connection closes
    delay_s: float = 0.0
    url: str = ""
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def start_mirror() -> Iterator[Callable[..., Mirror]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(files: dict[str, bytes], **behaviour) -> Mirror:
        mirror = Mirror(dict(files), **behaviour)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append(name)
                time.sleep(mirror.delay_s)
                status = mirror.errors.get(name, 200 if name in mirror.files else 404)
                if status != 200:
                    self.send_error(status)
                    return
                body = mirror.files[name]
                self.send_response(200)
                if name in mirror.broken_off:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"10\r\n" + body[:16] + b"\r\n")  # then the connection closes
                    return
                self.send_header(
                    "Content-Length", str(2 * len(body) if name in mirror.truncate else len(body))
                )
                self.end_headers()
                # then the connection closes (HTTP/1.0); a client that gave up (the timeout tests) is gone
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        mirror.url = f"http://127.0.0.1:{server.server_address[1]}/mnist/"
        return mirror

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirrored() -> tuple[Dataset, dict[str, bytes], dict[str, str]]:
    """A 20/10 MNIST-shaped dataset, its files as a mirror serves them (gzip'd, but not the way this
    repository writes gzip, so ingesting must re-encode them) and their md5s, standing in for the official."""
    train, train_labels = random_images(20, 28, 28, seed=5)
    test, test_labels = random_images(10, 28, 28, seed=6)
    dataset = Dataset(train, train_labels, test, test_labels)
    arrays = {TRAIN_IMAGES: train, TRAIN_LABELS: train_labels, TEST_IMAGES: test, TEST_LABELS: test_labels}
    files = {name: gzip.compress(encode_idx(a), compresslevel=1, mtime=1) for name, a in arrays.items()}
    return dataset, files, {name: hashlib.md5(content).hexdigest() for name, content in files.items()}


def _snapshot(folder: Path) -> tuple[int, dict[str, bytes], list[str]]:
    """The folder's inode (replace_directory swaps in a new one), its files, and what lies beside it."""
    return (
        os.stat(folder).st_ino,
        read_directory_files(folder),
        sorted(p.name for p in folder.parent.iterdir()),
    )


def _record(data: Path, version: str) -> None:
    """`data.dvc` beside `data` records `version`, so ingesting may replace it (`dvc checkout` has it)."""
    data.with_name("data.dvc").write_text(f"outs:\n- md5: {version}\n  path: {data.name}\n")


def test_the_official_md5s_cover_every_file() -> None:
    assert set(MNIST_MD5) == set(DATA_FILES)
    assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in MNIST_MD5.values())
    assert MNIST_MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"


def test_mnist_from_a_mirror_is_ingested_like_a_folder(start_mirror, mirrored, tmp_path: Path) -> None:
    dataset, files, md5s = mirrored
    first, second = start_mirror(files), start_mirror(files)
    md5 = ingest("mnist", tmp_path / "data", mirrors=[first.url, second.url], md5s=md5s)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    assert md5 == ingest(str(folder), tmp_path / "from-folder")
    written = read_directory_files(tmp_path / "data")
    assert written == read_directory_files(tmp_path / "from-folder") == encode_dataset(dataset) != files
    assert sorted(first.requests) == sorted(DATA_FILES) and second.requests == []  # mirrors in turn


def test_mnist_skips_mirrors_that_are_down(
    start_mirror, mirrored, tmp_path: Path, monkeypatch, capsys
) -> None:
    dataset, files, md5s = mirrored
    monkeypatch.setattr(ingest_module, "DOWNLOAD_TIMEOUT_S", 0.2)
    refused = f"http://127.0.0.1:{free_port()}/mnist/"
    hanging, good = start_mirror(files, delay_s=1.0), start_mirror(files)
    ingest("mnist", tmp_path / "data", mirrors=[refused, hanging.url, good.url], md5s=md5s)
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    lines = capsys.readouterr().err.splitlines()
    for url, reason in ((refused, "refused"), (hanging.url, "timed out")):
        tries = [line for line in lines if line.startswith(url)]
        assert len(tries) == 4 and all(reason in line and "trying the next mirror" in line for line in tries)
    assert sorted(good.requests) == sorted(DATA_FILES)


def test_mnist_falls_back_file_by_file_past_http_errors(
    start_mirror, mirrored, tmp_path: Path, capsys
) -> None:
    dataset, files, md5s = mirrored
    patchy = start_mirror(files, errors={TRAIN_LABELS: 404, TEST_IMAGES: 503, TEST_LABELS: 403})
    good = start_mirror(files)
    ingest("mnist", tmp_path / "data", mirrors=[patchy.url, good.url], md5s=md5s)
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    assert sorted(good.requests) == sorted([TRAIN_LABELS, TEST_IMAGES, TEST_LABELS])  # the rest: the first
    err = capsys.readouterr().err
    assert f"{patchy.url}{TRAIN_LABELS}: not found (HTTP 404 Not Found); trying the next mirror" in err
    assert f"{patchy.url}{TEST_IMAGES}: HTTP 503" in err
    # S3 and Google Cloud answer 403 for a file they do not have: no advice about credentials
    assert f"{patchy.url}{TEST_LABELS}: not found (HTTP 403 Forbidden); trying the next mirror" in err


def test_mnist_with_a_wrong_file_on_every_mirror_leaves_data_untouched(
    start_mirror, mirrored, tmp_path: Path, capsys
) -> None:
    dataset, files, md5s = mirrored
    _record(tmp_path / "data", write_digits(tmp_path / "data", None))
    before = _snapshot(tmp_path / "data")
    # valid IDX, so only the md5 tells it apart; the last file, so the other three were already fetched
    wrong = gzip.compress(encode_idx((dataset.test_labels + 1) % 10), mtime=1)
    mirror = start_mirror({**files, TEST_LABELS: wrong})
    with pytest.raises(DataError) as raised:
        ingest("mnist", tmp_path / "data", mirrors=[mirror.url], md5s=md5s)
    message = str(raised.value)
    assert message.startswith(f"{TEST_LABELS}: no mirror gave the official file (md5 {md5s[TEST_LABELS]})")
    found = hashlib.md5(wrong).hexdigest()
    assert f"{mirror.url}{TEST_LABELS}: md5 {found} is not the official {md5s[TEST_LABELS]}" in message
    assert "Nothing was changed" in message
    assert "without the official md5 check, ingest its base URL: `mnist-lab data ingest URL`" in message
    assert _snapshot(tmp_path / "data") == before
    assert capsys.readouterr().err.count(f"md5 {found} is not the official") == 1


def test_data_nothing_else_keeps_is_refused_before_downloading(
    start_mirror, mirrored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal to replace unrecorded data came after MNIST's 55 MB download (or OpenML's), wasted."""
    import sklearn.datasets

    _, files, md5s = mirrored
    mirror = start_mirror(files)
    write_digits(tmp_path / "data", None)
    before = _snapshot(tmp_path / "data")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", no_download)
    for source in ("mnist", "openml", mirror.url):
        with pytest.raises(DataError, match=r"which nothing else keeps .* nothing was downloaded or changed"):
            ingest(source, tmp_path / "data", mirrors=[mirror.url], md5s=md5s)
    assert mirror.requests == []
    assert _snapshot(tmp_path / "data") == before
    ingest("mnist", tmp_path / "data", mirrors=[mirror.url], md5s=md5s, force=True)
    assert sorted(mirror.requests) == sorted(DATA_FILES)


def test_mnist_files_are_validated_like_any_source(start_mirror, mirrored, tmp_path: Path) -> None:
    """A file with the expected md5 is still read and checked as IDX before data/ is replaced."""
    _, files, md5s = mirrored
    _record(tmp_path / "data", write_digits(tmp_path / "data", None))
    before = _snapshot(tmp_path / "data")
    cut_labels = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x14\x01")  # says 20 labels, holds 1
    mirror = start_mirror({**files, TRAIN_LABELS: cut_labels})
    md5s = {**md5s, TRAIN_LABELS: hashlib.md5(cut_labels).hexdigest()}
    with pytest.raises(DataError, match=f"ingest mnist: {TRAIN_LABELS}: truncated"):
        ingest("mnist", tmp_path / "data", mirrors=[mirror.url], md5s=md5s)
    assert _snapshot(tmp_path / "data") == before


def test_mnist_detects_a_truncated_download(start_mirror, mirrored, tmp_path: Path, capsys) -> None:
    """urllib returns a body cut short without complaint: the Content-Length must be checked."""
    dataset, files, md5s = mirrored
    cut = start_mirror(files, truncate={TRAIN_IMAGES})
    size = len(files[TRAIN_IMAGES])
    truncated = re.escape(f"{cut.url}{TRAIN_IMAGES}: truncated download: {size} of {2 * size} bytes")

    ingest("mnist", tmp_path / "data", mirrors=[cut.url, start_mirror(files).url], md5s=md5s)
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    assert re.search(truncated + ".*; trying the next mirror", capsys.readouterr().err)

    _record(tmp_path / "data", dvc_directory_md5(read_directory_files(tmp_path / "data")))
    before = _snapshot(tmp_path / "data")
    with pytest.raises(DataError, match=f"{TRAIN_IMAGES}: no mirror gave the official file .*{truncated}"):
        ingest("mnist", tmp_path / "data", mirrors=[cut.url], md5s=md5s)
    assert _snapshot(tmp_path / "data") == before


def test_a_download_that_breaks_off_is_said_and_the_next_mirror_tried(
    start_mirror, mirrored, tmp_path: Path, capsys
) -> None:
    """A chunked answer whose connection drops mid-body raised http.client's IncompleteRead (no OSError)
    through `ingest` as a traceback, and the next mirror was never tried."""
    dataset, files, md5s = mirrored
    cut = start_mirror(files, broken_off={TRAIN_IMAGES})
    ingest("mnist", tmp_path / "data", mirrors=[cut.url, start_mirror(files).url], md5s=md5s)
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    said = capsys.readouterr().err
    assert f"{cut.url}{TRAIN_IMAGES}: the download broke off (IncompleteRead" in said
    assert "fetch it again; trying the next mirror" in said
    with pytest.raises(DataError, match=r"the download broke off \(IncompleteRead.*fetch it again"):
        ingest(cut.url, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_url_with_spaces_or_accents_is_fetched_and_a_bad_one_said(
    start_mirror, mirrored, tmp_path: Path
) -> None:
    """A folder URL with a space or an accent (http.client refused the first, could not encode the second)
    is fetched as a browser fetches it; a port that is no number is a clear error, not a traceback."""
    dataset, files, _ = mirrored
    mirror = start_mirror(files)
    for folder in ("my data", "données"):
        out = tmp_path / folder
        ingest(mirror.url.replace("/mnist/", f"/{folder}/"), out)
        assert read_directory_files(out) == encode_dataset(dataset)
    with pytest.raises(DataError, match=r"127.0.0.1:port/x/.*not a URL that can be fetched .*check the URL"):
        ingest("http://127.0.0.1:port/x/", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_mnist_checks_the_official_md5s_by_default(start_mirror, mirrored, tmp_path: Path) -> None:
    _, files, _ = mirrored
    mirror = start_mirror(files)
    expected = (
        f"md5 {hashlib.md5(files[TRAIN_IMAGES]).hexdigest()} is not the official {MNIST_MD5[TRAIN_IMAGES]}"
    )
    with pytest.raises(DataError, match=expected):
        ingest("mnist", tmp_path / "data", mirrors=[mirror.url])
    assert not (tmp_path / "data").exists()


def test_cli_ingest_mnist_tries_the_users_mirror_first_and_tracks_the_result(
    start_mirror, mirrored, tmp_path: Path, monkeypatch, capsys
) -> None:
    dataset, files, md5s = mirrored
    public = start_mirror(files)
    monkeypatch.setattr(ingest_module, "MNIST_MIRRORS", (public.url,))  # never the real mirrors in tests
    for name, md5 in md5s.items():
        monkeypatch.setitem(MNIST_MD5, name, md5)
    repo = copy_repository(tmp_path / "repo")
    monkeypatch.chdir(repo)
    before = (repo / "data.dvc").read_text()
    users = start_mirror(files, errors={TEST_LABELS: 404})
    assert main(["data", "ingest", "mnist", "--mirror", users.url]) == 0
    assert "tracked it with `dvc add data`" in capsys.readouterr().out
    assert (repo / "data.dvc").read_text() != before
    assert read_directory_files(repo / "data") == encode_dataset(dataset)
    assert len(users.requests) == 4 and public.requests == [TEST_LABELS]


def test_cli_ingest_mnist_still_checks_the_official_md5_of_the_users_mirror(
    start_mirror, mirrored, tmp_path: Path, monkeypatch, capsys
) -> None:
    _, files, _ = mirrored
    monkeypatch.setattr(ingest_module, "MNIST_MIRRORS", ())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    users = start_mirror(files)
    assert main(["data", "ingest", "mnist", "--mirror", users.url, "--no-track"]) == 2
    err = capsys.readouterr().err
    assert f"is not the official {MNIST_MD5[TRAIN_IMAGES]}" in err and "Nothing was changed" in err
    assert "to ingest the folder ./mnist, write ./mnist" in err
    assert not (tmp_path / "data").exists()


def test_cli_mirror_is_only_for_mnist(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "MNIST_MIRRORS", ())  # never the real mirrors: no network in tests
    assert main(["data", "ingest", str(tmp_path), "--mirror", "http://127.0.0.1:9/"]) == 2
    assert "--mirror is only for `data ingest mnist`" in capsys.readouterr().err
    # without its scheme: it said "cannot download (unknown url type: 127.0.0.1)" for each file
    assert main(["data", "ingest", "mnist", "--mirror", "127.0.0.1:9/mnist/", "--no-track"]) == 2
    assert (
        "--mirror 127.0.0.1:9/mnist/: not a URL; give the folder's URL, as http://host/path/"
        in capsys.readouterr().err
    )
    # any scheme urllib fetches is one (a file:// mirror on a shared disk)
    assert main(["data", "ingest", "mnist", "--mirror", (tmp_path / "none").as_uri(), "--no-track"]) == 2
    assert "not a URL" not in capsys.readouterr().err


def test_a_server_failing_says_to_try_again_later(tmp_path: Path) -> None:
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(500)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mnist"
        with pytest.raises(DataError) as failed:
            ingest(url, tmp_path / "data")
    finally:
        server.shutdown()
        server.server_close()
    assert str(failed.value) == (
        f"{url}/train-images-idx3-ubyte.gz: HTTP 500 Internal Server Error; the server failed: try again "
        "later, or another URL"
    )


def test_kaggle_style_file_names_are_ingested(mnist_shaped: tuple[Path, Dataset], tmp_path: Path) -> None:
    """Kaggle's copy of MNIST names the uncompressed files `train-images.idx3-ubyte`."""
    folder, dataset = mnist_shaped
    for path in folder.iterdir():
        path.rename(folder / path.name.replace("-idx", ".idx", 1))
    ingest(str(folder), tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    # a damaged one is named as the folder names it (it was named train-images-idx3-ubyte, not there)
    images = folder / "train-images.idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images\.idx3-ubyte") as refused:
        ingest(str(folder), tmp_path / "data")
    assert "train-images-idx3-ubyte" not in str(refused.value)


def test_a_url_with_credentials_is_fetched_with_basic_auth(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """`https://user:password@host/...`: urllib took `user:password@host` for the host name."""
    from tests.servers import basic_auth_http_server

    folder, dataset = mnist_shaped
    with basic_auth_http_server(tmp_path / "store", "alice", "pa:ss@word") as server:
        shutil.copytree(folder, server.root / "dvc" / "mnist")
        base = f"{server.url}/mnist"
        authorised = base.replace("http://", "http://alice:pa%3Ass%40word@")
        ingest(authorised, tmp_path / "data")
        assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
        wrong = base.replace("http://", "http://alice:wrong@")
        with pytest.raises(DataError) as refused:
            ingest(wrong, tmp_path / "other")
        assert str(refused.value) == (
            f"{base}/train-images-idx3-ubyte.gz: HTTP 401 Unauthorized: the server wants credentials; check "
            "the user:password in the URL"
        )
        with pytest.raises(DataError) as anonymous:
            ingest(base, tmp_path / "other")
        # as the CLI prints it (credentials masked in any URL): the example of the fix was masked away too
        assert redact(str(anonymous.value)).endswith(
            "the server wants credentials; give them in the URL as USER:PASSWORD@ before its host (a : or @ "
            "in them as %3A, %40)"
        )
    assert not (tmp_path / "other").exists()


def test_a_url_with_credentials_is_never_shown_with_them(tmp_path: Path, http_server: str) -> None:
    with_credentials = http_server.replace("http://", "http://alice:s3cret-pw@") + "/missing"
    with pytest.raises(DataError) as refused:
        ingest(with_credentials, tmp_path / "data")
    assert "s3cret-pw" not in str(refused.value) and "alice" not in str(refused.value)
    assert f"{http_server}/missing" in str(refused.value)


def test_cli_data_commands_use_the_repositorys_data_from_any_of_its_folders(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    repo = copy_repository(tmp_path / "repo")
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")
    assert main(["data", "digits"]) == 0
    assert "to ../data/" in (out := capsys.readouterr().out) and "checked against ../data.dvc" in out
    assert sorted(p.name for p in (repo / "data").iterdir()) == sorted(read_directory_files(repo / "data"))
    assert main(["data", "restore"]) == 0
    assert "../data/ already matches ../data.dvc" in capsys.readouterr().out
    source = tmp_path / "source"
    source.mkdir()
    for name, content in read_directory_files(repo / "data").items():
        (source / name).write_bytes(content)
    assert main(["data", "ingest", str(source)]) == 0
    assert "tracked it with `dvc add ../data`: commit ../data.dvc" in capsys.readouterr().out
    assert recorded_data_version(repo / "data.dvc") == dvc_directory_md5(read_directory_files(repo / "data"))
    assert list((repo / "notebooks").iterdir()) == []  # nothing written where it ran


def test_cli_ingest_checks_dvc_can_record_the_data_before_writing_it(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, monkeypatch, capsys
) -> None:
    """Outside a DVC repository (or with --out outside it) the files were written, then `dvc add` failed
    ("you are not inside of a DVC repository"): refused first now, naming --no-track. And when `dvc add`
    fails or is interrupted after data/ was replaced, the message says data/ holds the new data that
    data.dvc may not record, and how to record it or go back (it was a bare "interrupted")."""
    import subprocess

    folder, dataset = mnist_shaped
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert main(["data", "ingest", str(folder)]) == 2
    said = capsys.readouterr().err
    assert (
        f"{outside} is in no DVC repository, so `dvc add data` could not record the data; nothing was" in said
    )
    assert "--no-track" in said and not (outside / "data").exists()
    assert main(["data", "ingest", str(folder), "--no-track"]) == 0  # the files alone, as asked
    assert read_directory_files(outside / "data") == encode_dataset(dataset)

    repo = copy_repository(tmp_path / "repo")
    monkeypatch.chdir(repo)
    assert main(["data", "ingest", str(folder), "--out", str(tmp_path / "elsewhere")]) == 2
    said = capsys.readouterr().err
    assert f"--out {tmp_path / 'elsewhere'} is outside the repository ({repo.resolve()})" in said
    assert not (tmp_path / "elsewhere").exists()

    def failing(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["dvc", *args], 1, "", "ERROR: the cache is locked")

    def timing_out(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
        raise MnistLabError("`dvc add data` did not finish in 600 s")

    def interrupted(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
        raise KeyboardInterrupt

    version = dvc_directory_md5(encode_dataset(dataset))
    for stand_in, code, first in ((failing, 2, "`dvc add data` failed: ERROR: the cache is locked\n"),
                                  (timing_out, 2, "`dvc add data` did not finish in 600 s\n"),
                                  (interrupted, 130, "interrupted while DVC recorded it: ")):  # fmt: skip
        monkeypatch.setattr(ingest_module, "dvc", stand_in)
        assert main(["data", "ingest", str(folder), "--force"]) == code
        said = capsys.readouterr().err
        recorded = (
            f"data/ holds the new data (version {version}), but data.dvc may still record the one "
            "before: `dvc add data` records the new data; `mnist-lab data restore --force` brings back "
            "what data.dvc records"
        )
        assert first + recorded in said, said

    # data/ a link to a folder elsewhere (a bigger disk): the repository's data still, not an --out outside
    # it (it was refused so)
    monkeypatch.setattr(ingest_module, "dvc", lambda *args, **kwargs: subprocess.CompletedProcess(args, 0))
    shutil.rmtree(repo / "data")
    (tmp_path / "big-disk").mkdir()
    (repo / "data").symlink_to(tmp_path / "big-disk")
    assert main(["data", "ingest", str(folder), "--force"]) == 0, capsys.readouterr().err


def test_a_terminal_that_closed_does_not_turn_the_last_words_into_a_traceback(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, monkeypatch
) -> None:
    """SIGHUP: the terminal is gone, so printing "terminated" failed with EIO, and that OSError escaped
    main (exit 1, not 129)."""
    import io
    import signal

    from mnist_lab.cli import Terminated

    class ClosedTerminal(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

    def hung_up(*args: object, **kwargs: object) -> str:
        raise Terminated(signal.SIGHUP)

    monkeypatch.setattr(ingest_module, "ingest", hung_up)
    monkeypatch.setattr("sys.stderr", ClosedTerminal())
    folder, _ = mnist_shaped
    assert main(["data", "ingest", str(folder), "--out", str(tmp_path / "data"), "--no-track"]) == 129


def test_cli_digits_outside_a_repository_and_a_missing_dvc_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["data", "digits"]) == 0
    assert "no data.dvc to check the digits against: written unchecked" in capsys.readouterr().err
    assert (tmp_path / "data").is_dir()
    assert main(["data", "digits", "--dvc-file", "nope.dvc"]) == 2
    assert "--dvc-file nope.dvc: no such file (or write unchecked: --no-check)" in capsys.readouterr().err
    # restore is to what a repository records: outside one, said (it advised `git checkout -- data.dvc`)
    assert main(["data", "restore"]) == 2
    said = capsys.readouterr().err
    assert "no repository found at or above" in said and "git checkout" not in said


def test_data_that_nothing_else_keeps_is_never_replaced_without_force(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, capsys
) -> None:
    """Ingested with --no-track (or edited by hand), data/ is in no cache and no commit: a second ingest
    replaced it silently. Refused unless data.dvc records it (then the DVC cache has it) or --force."""
    folder, dataset = mnist_shaped
    data = tmp_path / "data"
    write_digits(data, None)
    before = _snapshot(data)
    with pytest.raises(DataError) as refused:
        ingest(str(folder), data)
    found = dvc_directory_md5(before[1])
    assert str(refused.value) == (
        f"{data}/ holds data version {found}, which nothing else keeps (no {data}.dvc records it, and the "
        f"DVC cache does not hold it): replacing it would lose it; nothing was changed. Keep it first "
        f"(`dvc add {data}` and commit {data}.dvc), or replace it anyway with --force"
    )
    assert _snapshot(data) == before
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    with pytest.raises(DataError, match=r"which nothing else keeps \(.*data.dvc records 0123456789abcdef"):
        ingest(str(folder), data)
    assert read_directory_files(data) == before[1]
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / found[:2] / found[2:]  # `dvc checkout` has it
    cached.parent.mkdir(parents=True)
    cached.write_text("[]")
    ingest(str(folder), data)
    assert read_directory_files(data) == encode_dataset(dataset)
    write_digits(data, None, force=True)
    shutil.rmtree(tmp_path / ".dvc")
    (tmp_path / "data.dvc").write_text(f"outs:\n- md5: {found}\n  path: data\n")  # recorded: replaced
    replaced = ingest(str(folder), data)
    assert read_directory_files(data) == encode_dataset(dataset)
    assert ingest(str(folder), data) == replaced  # the same version again: nothing to lose
    (tmp_path / "data.dvc").unlink()
    write_digits(data, None, force=True)
    assert read_directory_files(data) == before[1]
    # the CLI: `data digits` and `data ingest` refuse the same way, with --force to override
    assert main(["data", "ingest", str(folder), "--out", str(data), "--no-track"]) == 2
    assert "replace it anyway with --force" in capsys.readouterr().err
    assert main(["data", "ingest", str(folder), "--out", str(data), "--no-track", "--force"]) == 0
    assert main(["data", "digits", "--out", str(data), "--no-check"]) == 2
    assert read_directory_files(data) == encode_dataset(dataset)
    assert main(["data", "digits", "--out", str(data), "--no-check", "--force"]) == 0
    assert read_directory_files(data) == before[1]


def test_a_bucket_answering_403_for_absent_names_is_read_under_the_other_names(
    start_mirror, mirrored, tmp_path: Path
) -> None:
    """S3 and Google Cloud answer 403 for an object they do not have (without list permission): the first
    name tried (.gz) failed the whole ingest instead of trying the uncompressed names."""
    import gzip as gz

    dataset, files, _ = mirrored
    plain = {name.removesuffix(".gz"): gz.decompress(content) for name, content in files.items()}
    bucket = start_mirror(plain, errors={name: 403 for name in files})
    ingest(bucket.url, tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    assert bucket.requests[:2] == [TRAIN_IMAGES, TRAIN_IMAGES.removesuffix(".gz")]


def test_a_source_without_the_test_pair_says_prepare_will_hold_out_a_test_set(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, capsys
) -> None:
    folder, _ = mnist_shaped
    for name in (TEST_IMAGES, TEST_LABELS):
        (folder / name.removesuffix(".gz")).unlink(missing_ok=True)
        (folder / name).unlink(missing_ok=True)
    ingest(str(folder), tmp_path / "data")
    assert (
        f"note: {folder} has no test set (t10k-* files): `prepare` holds out data.test_size of the training "
        "images (params.yaml) as the test set" in capsys.readouterr().err
    )


def test_a_remote_that_answers_without_the_data_is_named_not_said_missing(
    tmp_path: Path, monkeypatch
) -> None:
    """A remote set and answering, without this version: the message said no remote was set."""
    import subprocess

    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")

    def dvc(*args, **kwargs):
        answer = {"remote": "origin\n"}.get(args[0], "")
        code = 0 if args[0] == "remote" else 1
        return subprocess.CompletedProcess(["dvc", *args], code, answer, "ERROR: failed to pull")

    monkeypatch.setattr(ingest_module, "dvc", dvc)
    monkeypatch.setattr(ingest_module, "diagnose_remote", lambda root: None)  # it answers
    with pytest.raises(DataError) as failed:
        ingest_module.restore_data(tmp_path / "data", tmp_path / "data.dvc")
    assert "neither the DVC cache nor DVC remote 'origin' has it" in str(failed.value)
    assert "no DVC remote is set" not in str(failed.value)


def test_a_failed_pull_is_not_followed_by_the_advice_to_pull(tmp_path: Path, monkeypatch, capsys) -> None:
    """After `dvc pull` failed, the error ended "(get it with `dvc pull`)": the advice just tried."""
    import subprocess

    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")

    def dvc(*args, **kwargs):
        answer = {"remote": "origin\n", "pull": ""}.get(args[0], "")
        code = 0 if args[0] == "remote" else 1
        return subprocess.CompletedProcess(["dvc", *args], code, answer, "ERROR: failed to pull")

    monkeypatch.setattr(ingest_module, "dvc", dvc)
    monkeypatch.setattr(ingest_module, "diagnose_remote", lambda root: "the remote folder is empty")
    with pytest.raises(DataError) as failed:
        ingest_module.restore_data(tmp_path / "data", tmp_path / "data.dvc")
    assert "`dvc pull` failed: the remote folder is empty; and" in str(failed.value)
    assert "get it with `dvc pull`" not in str(failed.value)
    assert "data restore" not in str(failed.value)  # the command that failed is not advised either
    assert "to switch to the digits instead, `mnist-lab data digits --no-check && dvc add data`" in str(
        failed.value
    )
