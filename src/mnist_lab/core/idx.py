"""The IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/): pure encode/decode with validation.

An IDX file is: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
uint32, then the values in C order. MNIST images are `ubyte` with 3 dimensions (count, rows, cols) and
labels are `ubyte` with 1 dimension (count). Files are usually gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np

from mnist_lab.core.errors import DataError

# type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
N_CLASSES = 10


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (uncompressed)."""
    for code, dtype in IDX_DTYPES.items():  # noqa: B007 - `code` is used after the loop
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            break
    else:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name, so the same input always gives the same bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def decode_idx(data: bytes, source: str, expected_ndim: int | None = None) -> np.ndarray:
    """Decode IDX bytes (gzip or not). `source` names the file in error messages. With `expected_ndim` (3
    for images, 1 for labels), a header declaring another number of dimensions is refused as such, before
    its sizes are trusted."""
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{source}: corrupt gzip stream ({exc}); fetch the file again") from None
    dtype, shape, header_size = idx_header(data, source, expected_ndim)
    expected = idx_data_bytes(dtype, shape)
    actual = len(data) - header_size
    if actual != expected:
        raise DataError(idx_size_error(source, shape, expected, actual))
    return np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def idx_header(
    data: bytes, source: str, expected_ndim: int | None = None
) -> tuple[np.dtype, tuple[int, ...], int]:
    """(value type, shape, header size in bytes) from the start of uncompressed IDX bytes (the whole
    header at least, when there is one), checked as decode_idx checks it."""
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        if (
            data.lstrip()[:1] == b"<"
        ):  # a server's page (an error, a login, a folder listing) saved as the file
            raise DataError(
                f"{source}: a web page (HTML), not an IDX file: the server answered with a page instead of "
                "the file; check the URL (open it in a browser to see the page)"
            )
        raise DataError(
            f"{source}: bad magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes; "
            "is this really an MNIST-format file? Give MNIST's IDX files (gzip'd or not)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x} in magic number 0x{data[:4].hex()}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        kinds = {1: "a labels file", 3: "an images file"}
        expected_kind = kinds.get(expected_ndim, f"a {expected_ndim}-dimension file")
        raise DataError(
            f"{source}: magic number 0x{data[:4].hex()} declares {ndim} dimension{'s' * (ndim != 1)}, but "
            f"{expected_kind} has {expected_ndim} (magic 0x0000{code:02x}{expected_ndim:02x})"
            + (f": is this {kinds[ndim]}?" if ndim in kinds else ": the header is corrupt")
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{source}: truncated header: {ndim} dimensions need {header_size} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    return IDX_DTYPES[code], tuple(int(n) for n in shape), header_size


def idx_data_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """How many bytes of values follow an IDX header declaring `dtype` and `shape`."""
    return math.prod(shape) * dtype.itemsize  # Python ints: (2**32-1)**3 does not wrap around as int64 does


def idx_size_error(source: str, shape: tuple[int, ...], expected: int, actual: int) -> str:
    """A file's values short of (or beyond) what its header declares, and what to do: fetch it again (a
    download cut short), or write it again (a writer that counted wrong)."""
    what = "truncated" if actual < expected else "has trailing bytes"
    fix = "fetch or copy the file again" if actual < expected else "the writer miscounted: write it again"
    return (
        f"{source}: {what}: header says shape {shape} ({expected} bytes of data), file has {actual} bytes; "
        f"{fix}"
    )


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Images must be `ubyte` with shape (count, rows, cols)."""
    check_image_shape(images.dtype, images.shape, source)
    return images


def check_image_shape(dtype: np.dtype, shape: tuple[int, ...], source: str) -> None:
    """check_images on what an IDX header declares, before any image is read."""
    if len(shape) != 3:
        raise DataError(
            f"{source}: images need 3 dimensions (count, rows, cols), got shape {shape}; "
            "is this a labels file?"
        )
    if dtype.kind != "u" or dtype.itemsize != 1:
        raise DataError(
            f"{source}: images must be unsigned bytes (type code 0x08), got {dtype.newbyteorder('=')}"
        )
    if 0 in shape:
        raise DataError(f"{source}: empty image set, shape {shape}")


def check_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """Labels must be `ubyte` digits 0-9 with shape (count,)."""
    if labels.ndim != 1:
        raise DataError(
            f"{source}: labels need 1 dimension, got shape {labels.shape}; is this an images file?"
        )
    if labels.dtype != np.uint8:
        raise DataError(f"{source}: labels must be unsigned bytes (type code 0x08), got {labels.dtype}")
    if labels.size and labels.max() >= N_CLASSES:
        bad = np.flatnonzero(labels >= N_CLASSES)
        raise DataError(
            f"{source}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0-9 "
            f"({bad.size} labels out of range): MNIST's labels are the digits 0-9; fix the file, or take "
            "another copy of it"
        )
    return labels


def check_pair(images: np.ndarray, labels: np.ndarray, images_source: str, labels_source: str) -> None:
    """Images and labels must have the same count."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_source} has {images.shape[0]} images but {labels_source} has {labels.shape[0]} labels: "
            "each image needs its label (are the two files of the same set, and whole?)"
        )
