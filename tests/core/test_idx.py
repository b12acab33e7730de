import gzip
import struct

import numpy as np
import pytest

from mnist_lab.core.errors import DataError
from mnist_lab.core.idx import (
    check_images,
    check_labels,
    check_pair,
    decode_idx,
    encode_idx,
    gzip_deterministic,
)


@pytest.mark.parametrize("shape", [(5, 8, 8), (3, 28, 28), (7,)])
def test_round_trip_uint8(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(decode_idx(encode_idx(array), "x"), array)
    assert np.array_equal(decode_idx(gzip_deterministic(encode_idx(array)), "x.gz"), array)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_other_types(dtype: type) -> None:
    array = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    decoded = decode_idx(encode_idx(array), "x")
    assert decoded.dtype == np.dtype(dtype) and np.array_equal(decoded, array)


def test_header_matches_the_mnist_specification() -> None:
    """MNIST's own train-images header: magic 0x00000803, then count, rows, cols as big-endian uint32."""
    data = encode_idx(np.zeros((60000, 28, 28), dtype=np.uint8))
    assert data[:16] == struct.pack(">IIII", 0x803, 60000, 28, 28)
    assert encode_idx(np.zeros(10, dtype=np.uint8))[:8] == struct.pack(">II", 0x801, 10)


def test_gzip_output_is_deterministic() -> None:
    payload = encode_idx(np.arange(100, dtype=np.uint8))
    first = gzip_deterministic(payload)
    assert first == gzip_deterministic(payload)
    assert first[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert gzip.decompress(first) == payload


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic number 0x01020801"),
        # a server's page saved as the file: it said "bad magic number 0x3c21444f"
        (b"\n<!DOCTYPE html><html><body>Not here</body></html>", "a web page (HTML), not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "truncated: header says shape (5,)"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "has trailing bytes"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (  # sizes past int64: the bytes the header declares, not a wrapped-around number
            b"\x00\x00\x08\x03" + struct.pack(">III", *[2**32 - 1] * 3),
            f"truncated: header says shape {(2**32 - 1,) * 3} ({(2**32 - 1) ** 3} bytes of data)",
        ),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip stream"),
    ],
)
def test_corrupt_files_name_the_file_and_the_problem(data: bytes, expected: str) -> None:
    with pytest.raises(DataError) as info:
        decode_idx(data, "data/train-images-idx3-ubyte.gz")
    assert str(info.value).startswith("data/train-images-idx3-ubyte.gz: ")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected_ndim", "expected"),
    [
        (b"\x00\x00\x08\x03", 1, "magic number 0x00000803 declares 3 dimensions, but a labels file has 1 "
         "(magic 0x00000801): is this an images file?"),
        (b"\x00\x00\x08\x01", 3, "magic number 0x00000801 declares 1 dimension, but an images file has 3 "
         "(magic 0x00000803): is this a labels file?"),
        (b"\x00\x00\x08\x07", 1, "magic number 0x00000807 declares 7 dimensions, but a labels file has 1 "
         "(magic 0x00000801): the header is corrupt"),
    ],
)  # fmt: skip
def test_a_wrong_dimension_count_is_named_before_sizes_are_trusted(
    header: bytes, expected_ndim: int, expected: str
) -> None:
    """A labels file whose dimension byte is wrong: its label bytes would be read as sizes (billions of
    bytes 'missing'); the message must name the magic number instead."""
    data = header + struct.pack(">I", 360) + bytes(range(10)) * 36
    with pytest.raises(DataError) as info:
        decode_idx(data, "data/t10k-labels-idx1-ubyte.gz", expected_ndim)
    assert str(info.value) == f"data/t10k-labels-idx1-ubyte.gz: {expected}"


def test_truncated_gzip_is_reported() -> None:
    data = gzip_deterministic(encode_idx(np.zeros((10, 8, 8), dtype=np.uint8)))
    with pytest.raises(DataError, match="corrupt gzip stream"):
        decode_idx(data[:-10], "f.gz")


def test_image_and_label_checks() -> None:
    with pytest.raises(DataError, match="need 3 dimensions.*labels file"):
        check_images(np.zeros(4, dtype=np.uint8), "f")
    with pytest.raises(DataError, match="unsigned bytes"):
        check_images(np.zeros((2, 2, 2), dtype=np.float32), "f")
    with pytest.raises(DataError, match="empty image set"):
        check_images(np.zeros((0, 28, 28), dtype=np.uint8), "f")
    with pytest.raises(DataError, match="need 1 dimension.*images file"):
        check_labels(np.zeros((2, 2, 2), dtype=np.uint8), "f")
    with pytest.raises(DataError, match=r"label 12 at index 1 is outside 0-9 \(1 labels out of range\)"):
        check_labels(np.array([3, 12, 4], dtype=np.uint8), "f")
    with pytest.raises(DataError, match="imgs has 3 images but lbls has 2 labels"):
        check_pair(np.zeros((3, 2, 2), dtype=np.uint8), np.zeros(2, dtype=np.uint8), "imgs", "lbls")
