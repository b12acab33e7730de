"""Getting data into `data/`: the bundled digits, IDX files from a folder or URL, or MNIST from its mirrors
or OpenML."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.core.errors import DataError
from mnist_lab.datasets.folder import (
    DATA_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    dvc_directory_md5,
    encode_dataset,
    parse_recorded,
    read_dataset,
    read_directory_files,
    recorded_data_version,
    replace_directory,
)
from mnist_lab.datasets.remote_check import diagnose_remote
from mnist_lab.system.commands import dvc
from mnist_lab.system.redact import (
    display_uri,
    mask_credentials,
    open_url_with_credentials,
    split_url_credentials,
)

DOWNLOAD_TIMEOUT_S = 60
# Public copies of MNIST's four gzip files, tried in turn: torchvision's, TensorFlow's, the original
# (often down).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# The md5 of each official gzip file (as torchvision lists them): any mirror must serve exactly these bytes.
MNIST_MD5 = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}


RESTORE_HINT = "`mnist-lab data restore` gets it from the DVC cache or remote; "  # not said by restore itself


def write_digits(out: Path, dvc_file: Path | None, force: bool = False) -> str:
    """Write the bundled digits as IDX into `out`; if `dvc_file` records a version, check the bytes match it.

    Returns the directory md5. Nothing is written when the check fails, nor, unless `force`, when `out`
    holds data nothing else keeps (`refuse_replacing_unrecorded`)."""
    files = encode_dataset(digits_dataset())
    md5 = dvc_directory_md5(files)
    expected = recorded_data_version(dvc_file) if dvc_file else None
    if expected is not None and expected != md5:
        size = sum(len(content) for content in files.values())
        # the digits' number of files and about their bytes (another scikit-learn splits them otherwise, and
        # the gzip'd size moves a little): maybe the digits, made by another environment
        recorded = _recorded_size(dvc_file) if dvc_file else None
        maybe_digits = recorded is None or (
            recorded[0] == len(files) and abs(recorded[1] - size) < 0.1 * size
        )
        raise DataError(
            f"{dvc_file} records data version {expected}, but the bundled digits regenerate as {md5}: "
            f"this repository's data is not the bundled default ({RESTORE_HINT}to switch to the digits "
            "instead, `mnist-lab data digits --no-check && dvc add data`)"
            + (
                ", or this environment differs from the lock file (rebuild it with `make venv`)"
                if maybe_digits
                else ""
            )
        )
    refuse_replacing_unrecorded(out, md5, force)
    replace_directory(files, out)
    return md5


def _recorded_size(dvc_file: Path) -> tuple[int, int] | None:
    """(files, bytes) that `dvc_file` records for its folder (`nfiles`, `size`); None where it says not."""
    try:
        text = dvc_file.read_text(encoding="utf-8")
        return int(parse_recorded(text, "nfiles")), int(parse_recorded(text, "size"))
    except (OSError, UnicodeDecodeError, TypeError, ValueError):
        return None


def _download(url: str, destination: Path) -> str | None:
    """Download `url` to `destination` with a progress bar: None, or why the server has no such file
    ("HTTP 404 Not Found"; or 403 when no credentials were given: how S3 and Google Cloud buckets answer).

    A body shorter than its Content-Length is an error: urllib returns it without complaint."""
    import http.client

    from tqdm import tqdm

    shown = display_uri(url)  # a mirror URL may carry user:password
    parts = urllib.parse.urlsplit(url)  # a path with spaces or accents, sent as a browser sends it
    url = parts._replace(path=urllib.parse.quote(parts.path, safe="/%:@!$&'()*+,;=~")).geturl()
    try:
        with open_url_with_credentials(url, DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with (
                open(destination, "wb") as handle,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=Path(url).name, file=sys.stderr, disable=None
                ) as bar,
            ):
                while chunk := response.read(1 << 16):
                    handle.write(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
    except urllib.error.HTTPError as exc:
        given = split_url_credentials(url)[1:] != (None, None)
        # 401 asks for credentials; 403 refuses them, or (S3, Google Cloud) says a file is not there: with
        # no credentials given, the next name is tried (and a source with none names both answers)
        if exc.code == 404 or (exc.code == 403 and not given):
            return f"HTTP {exc.code} {exc.reason}"
        if exc.code == 401 or exc.code == 403:
            fix = (
                "check the user:password in the URL"
                if given
                # (no example URL: the CLI masks the credentials in any URL it prints, the example's too)
                else "give them in the URL as USER:PASSWORD@ before its host (a : or @ in them as %3A, %40)"
            )
            raise DataError(
                f"{shown}: HTTP {exc.code} {exc.reason}: the server wants credentials; {fix}"
            ) from None
        raise DataError(
            f"{shown}: HTTP {exc.code} {exc.reason}"
            + (
                "; the server failed: try again later, or another URL"
                if exc.code >= 500
                else "; check the URL"
            )
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{shown}: cannot download ({reason}); check the URL and the network") from None
    except (http.client.InvalidURL, ValueError) as exc:  # a port that is no number, a host not encodable
        raise DataError(f"{shown}: not a URL that can be fetched ({exc}); check the URL") from None
    except http.client.HTTPException as exc:  # the connection dropped mid-body (IncompleteRead), a bad answer
        problem = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{shown}: the download broke off ({problem}); fetch it again") from None
    if total is not None and received < total:
        raise DataError(f"{shown}: truncated download: {received} of {total} bytes; fetch it again")
    return None


def _download_checked(url: str, destination: Path, md5: str) -> str | None:
    """Download `url` to `destination`: None if its md5 is `md5`, else one line saying what went wrong."""
    try:
        if (absent := _download(url, destination)) is not None:
            return f"{display_uri(url)}: not found ({absent})"
    except DataError as exc:
        return str(exc)
    with open(destination, "rb") as handle:
        found = hashlib.file_digest(handle, "md5").hexdigest()
    return None if found == md5 else f"{display_uri(url)}: md5 {found} is not the official {md5}"


def download_mnist(
    staging: Path, mirrors: Sequence[str] = MNIST_MIRRORS, md5s: Mapping[str, str] = MNIST_MD5
) -> None:
    """Download MNIST's four gzip files into `staging`, each from the first of `mirrors` that serves it with
    the md5 `md5s` names. Each failed try is one line on stderr; a file no mirror has raises a DataError."""
    for name in DATA_FILES:
        problems = []
        for number, mirror in enumerate(mirrors, start=1):
            problem = _download_checked(file_url(mirror, name), staging / name, md5s[name])
            if problem is None:
                break
            problems.append(problem)
            print(problem + ("; trying the next mirror" if number < len(mirrors) else ""), file=sys.stderr)
        else:
            raise DataError(
                f"{name}: no mirror gave the official file (md5 {md5s[name]}): "
                f"{'; '.join(problems) or 'no mirror given'}. Nothing was changed; check the network, "
                "or give a mirror that has the official files with --mirror URL (to take another copy "
                "without the official md5 check, ingest its base URL: `mnist-lab data ingest URL`)"
            )


def file_url(base: str, name: str) -> str:
    """The URL of file `name` in the folder `base` names: added to its path, so that a query (an access
    token, `?token=...`) stays a query (it was `base?token=abc/name`, which no server has)."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def _accepted_names(name: str) -> tuple[tuple[str, str], ...]:
    """(name at the source, name in the staging folder) for one of MNIST's files, in the order tried: the
    official gzip, uncompressed, and uncompressed as Kaggle and others name it (`train-images.idx3-ubyte`)."""
    plain = name.removesuffix(".gz")
    dotted = plain.replace("-idx", ".idx", 1)
    return (name, name), (plain, plain), (dotted, plain)


def _collect(source: str, staging: Path) -> dict[str, str]:
    """Copy (or download) whatever of MNIST's four files `source` has into `staging`; a DataError naming
    what is missing when the training images or labels are not there. Returns the files renamed on the
    way, {name in staging: name at the source} (Kaggle's `train-images.idx3-ubyte`)."""
    renamed = {}
    if "://" in source:
        for name in DATA_FILES:
            for remote, local in _accepted_names(name):
                if _download(file_url(source, remote), staging / local) is None:
                    if remote != local:
                        renamed[local] = remote
                    break
        listing = None
    else:
        folder = Path(source)
        if folder.is_file():
            raise DataError(
                f"ingest source '{source}' is a file: give the folder holding MNIST's four IDX files "
                "(train-images-idx3-ubyte.gz, ...), a URL, `mnist` or `openml`"
            )
        if not folder.is_dir():
            raise DataError(
                f"ingest source '{source}': no such folder; give a folder holding MNIST's four IDX files, "
                "a URL (http(s)://.../), `mnist` or `openml`"
            )
        for name in DATA_FILES:
            for remote, local in _accepted_names(name):
                if (folder / remote).is_file():
                    shutil.copyfile(folder / remote, staging / local)
                    if remote != local:
                        renamed[local] = remote
                    break
        listing = sorted(path.name for path in folder.iterdir())
    _check_collected(display_uri(source), staging, listing)
    return renamed


def _check_collected(source: str, staging: Path, listing: list[str] | None) -> None:
    """The training pair (and the test pair, if either half is there) is in `staging`; else a DataError
    naming the source, the file names looked for and what the folder holds (`listing`; None for a URL)."""
    have = {
        name for name in DATA_FILES if any((staging / local).is_file() for _, local in _accepted_names(name))
    }
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        if (images in have) != (labels in have):
            present, absent = (images, labels) if images in have else (labels, images)
            raise DataError(f"ingest {source}: has {present} but not {absent} (with or without .gz)")
    if TRAIN_IMAGES in have:
        return
    if listing is None:
        there = (
            "none of them is at that URL (HTTP 404 for each, or 403 as a bucket answers for a file it does "
            "not have: a private one needs user:password in the URL)"
        )
    elif not listing:
        there = "the folder is empty"
    else:
        shown = ", ".join(listing[:8]) + (f" and {len(listing) - 8} more" if len(listing) > 8 else "")
        there = f"the folder holds {shown}"
        if any(name.lower().endswith((".csv", ".csv.gz", ".csv.zip")) for name in listing):
            there += (
                " (CSV files, such as Kaggle's mnist_train.csv, are not read: give MNIST's IDX files, or "
                "`mnist` to download them)"
            )
    raise DataError(
        f"ingest {source}: no MNIST training files there: looked for {TRAIN_IMAGES} and {TRAIN_LABELS} "
        f"(or the same without .gz, or named like train-images.idx3-ubyte); {there}"
    )


def fetch_openml() -> Dataset:
    """MNIST (mnist_784) from OpenML: the first 60,000 images train, the last 10,000 test.

    Needs the network."""
    from sklearn.datasets import fetch_openml as sklearn_fetch_openml

    try:
        bunch = sklearn_fetch_openml("mnist_784", version=1, as_frame=False, parser="liac-arff")
    except Exception as exc:
        raise DataError(f"cannot fetch mnist_784 from OpenML ({exc}); are you online?") from None
    images = np.asarray(bunch.data, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(bunch.target).astype(np.uint8)
    return Dataset(images[:60000], labels[:60000], images[60000:], labels[60000:])


def refuse_replacing_unrecorded(
    out: Path, new_version: str | None, force: bool = False, downloading: bool = False
) -> None:
    """A DataError when `out` holds data that `<out>.dvc` does not record (and that is not `new_version`):
    nothing else has a copy of it (not git, not the DVC cache), so replacing it would lose it. `force`:
    replace it anyway. `downloading`: said before a download (which the error then spares)."""
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    found = dvc_directory_md5(read_directory_files(out))
    dvc_file = out.with_name(out.name + ".dvc")
    recorded = recorded_data_version(dvc_file)
    if found in (recorded, new_version) or _in_dvc_cache(out, found):
        return
    records = f"{dvc_file} records {recorded}" if recorded else f"no {dvc_file} records it"
    done = "downloaded or changed" if downloading else "changed"
    raise DataError(
        f"{out}/ holds data version {found}, which nothing else keeps ({records}, and the DVC cache "
        f"does not hold it): replacing it would lose it; nothing was {done}. Keep it first (`dvc add "
        f"{out}` and commit {dvc_file}), or replace it anyway with --force"
    )


def _in_dvc_cache(out: Path, version: str) -> bool:
    """Whether the DVC cache of the repository around `out` holds data version `version` (DVC 3's layout:
    `.dvc/cache/files/md5/<2>/<rest>`), so that `dvc checkout` can bring it back."""
    for folder in out.resolve().parents:
        if (folder / ".dvc").is_dir():
            return (folder / ".dvc" / "cache" / "files" / "md5" / version[:2] / version[2:]).is_file()
    return False


def ingest(
    source: str,
    out: Path,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    md5s: Mapping[str, str] = MNIST_MD5,
    force: bool = False,
) -> str:
    """Validate the IDX files at `source` (folder, URL, `mnist` or `openml`) and write them to `out`,
    normalised to deterministic gzip. Returns the directory md5. `out` is untouched if anything is wrong,
    and, unless `force`, when it holds data nothing else keeps (`refuse_replacing_unrecorded`).

    `mnist` downloads the official files from `mirrors`, each checked against `md5s`. A source that
    downloads (`mnist`, `openml`, a URL) is refused before it downloads anything when `out` holds data
    nothing else keeps: only the same data again could replace it, and that is not worth a download."""
    if source in ("mnist", "openml") or "://" in source:
        refuse_replacing_unrecorded(out, None, force, downloading=True)
    if source == "openml":
        files = encode_dataset(fetch_openml())
    else:
        with tempfile.TemporaryDirectory(prefix="mnist-lab-ingest-") as folder:
            staging = Path(folder)
            renamed: dict[str, str] = {}
            if source == "mnist":
                download_mnist(staging, mirrors, md5s)
            else:
                renamed = _collect(source, staging)
            try:
                dataset = read_dataset(staging)
            except DataError as exc:
                said = str(exc).replace(str(staging) + "/", "")
                for local, remote in renamed.items():  # the file as the user named it
                    said = said.replace(local, remote)
                raise DataError(f"ingest {source}: {said}") from None
            files = encode_dataset(dataset)
            if dataset.test_images is None:
                print(
                    f"note: {display_uri(source)} has no test set (t10k-* files): `prepare` holds out "
                    "data.test_size of the training images (params.yaml) as the test set",
                    file=sys.stderr,
                )
    version = dvc_directory_md5(files)
    refuse_replacing_unrecorded(out, version, force)
    replace_directory(files, out)
    return version


def restore_data(out: Path, dvc_file: Path, force: bool = False) -> str:
    """Make `out` hold the data version `dvc_file` records: already there, from the DVC cache or remote,
    or (for the bundled default) regenerated and checked. Returns a sentence saying which. Data in `out`
    that differs from that version is refused, or with `force` replaced (only by the recorded version)."""
    expected = recorded_data_version(dvc_file)
    if expected is None:
        raise DataError(f"{dvc_file} is missing: restore it with `git checkout -- {dvc_file}`")
    if out.is_dir() and any(out.iterdir()):
        found = dvc_directory_md5(read_directory_files(out))
        if found == expected:
            return f"{out}/ already matches {dvc_file} ({expected})"
        if not force:
            back = f"`mnist-lab data restore --force` (or `dvc checkout --force {dvc_file}`)"
            try:
                read_dataset(out)
            except DataError as exc:  # a file deleted, a download cut short: nothing worth recording
                broken = str(exc).split("; ")[0]
                raise DataError(
                    f"{out}/ holds data version {found}, not the {expected} that {dvc_file} records, and is "
                    f"not whole ({broken}); nothing was changed. Bring back the recorded version with {back}"
                ) from None
            raise DataError(
                f"{out}/ holds data version {found}, not the {expected} that {dvc_file} records; nothing "
                f"was changed. Record it with `dvc add {out}`, or discard it and bring back the recorded "
                f"version with {back}"
            )
    replace = ("--force",) if force else ()
    if (
        dvc("checkout", *replace, str(dvc_file)).returncode == 0
        and out.is_dir()
        and dvc_directory_md5(read_directory_files(out)) == expected
    ):
        return f"{out}/ restored from the DVC cache ({expected})"
    problem = None  # what is wrong with the remote, when a pull failed because of it
    remote = dvc("remote", "default")
    remote_name = remote.stdout.strip() if remote.returncode == 0 else ""
    if remote_name:
        pulled = dvc("pull", *replace, str(dvc_file))
        if pulled.returncode == 0:
            return f"{out}/ pulled from DVC remote '{remote.stdout.strip()}' ({expected})"
        output = mask_credentials((pulled.stderr or pulled.stdout).strip())
        problem = diagnose_remote(dvc_file.resolve().parent)
        print(f"dvc pull failed, trying to regenerate: {problem or output[-500:]}", file=sys.stderr)
    try:
        write_digits(out, dvc_file, force=True)  # data that differs was refused above, unless `force`
    except DataError as exc:
        said = str(exc).replace(RESTORE_HINT, "")  # this is the restore, cache and remote just tried
        if problem:
            raise DataError(f"cannot restore {out}/: `dvc pull` failed: {problem}; and {said}") from None
        if remote_name:
            raise DataError(
                f"cannot restore {out}/: neither the DVC cache nor DVC remote '{remote_name}' has it (push "
                f"it there from a clone that has it: `dvc push`), and {said}"
            ) from None
        raise DataError(
            f"cannot restore {out}/: no DVC cache has it and no DVC remote is set (a teammate's: name it in "
            f".env and run `mnist-lab remote setup`, then `dvc pull`), and {said}"
        ) from None
    # into the DVC cache too, so that `dvc push` sends it (it pushes only what the cache holds)
    committed = dvc("commit", "--force", "--quiet", str(dvc_file))
    if committed.returncode != 0:
        print(f"warning: `dvc commit {dvc_file}` failed: {committed.stderr.strip()[-300:]}", file=sys.stderr)
    return (
        f"{out}/ regenerated from scikit-learn's bundled digits and checked against {dvc_file} ({expected})"
    )
