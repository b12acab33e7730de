"""Batch inference on files in bounded memory: images are read, predicted and written a chunk at a time
(IDX, gzipped or not, CSV or Parquet in; CSV or Parquet out), so a million images need no more memory than
CHUNK_IMAGES of them. The output is written beside its path and renamed over it at the end: a file that
turns out bad at its millionth image leaves no half-written predictions behind."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import pixel_columns_problem, pixel_index
from mnist_lab.core.idx import GZIP_MAGIC, check_image_shape, idx_data_bytes, idx_header, idx_size_error
from mnist_lab.serving.inference import predict_frame, table_pixels
from mnist_lab.system.files import check_writable, replaced_via_temp

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

CHUNK_IMAGES = 10_000  # 63 MB of float64 MNIST pixels; a chunk's intermediates are a few times that
TABLE_SUFFIXES = (".csv", ".parquet")
IDX_HEADER_MAX = 4 + 4 * 255


PREDICTION_PREFIXES = ("probability_", "score_")


@dataclass(frozen=True)
class ImageChunks:
    """Images of one file, read as (count, n_pixels) float64 chunks, each with the same rows of the columns
    to keep (an Arrow table of strings or of the file's own types; None when none are kept); `count` is
    None where the format does not say before it is read (CSV). `left_out`: the table's columns that are
    neither pixels nor kept."""

    count: int | None
    pieces: Iterator[tuple[np.ndarray, pa.Table | None]]
    left_out: tuple[str, ...] = ()

    @property
    def chunks(self) -> Iterator[np.ndarray]:
        return (pixels for pixels, _ in self.pieces)


def kept_column_name(column: str) -> str:
    """The name a kept input column has in the predictions: its own, or `input_<name>` where the
    predictions have a column of that name (`label`, `probability_<c>`, `score_<c>`)."""
    return f"input_{column}" if column == "label" or column.startswith(PREDICTION_PREFIXES) else column


def _check_kept(path: Path, columns: Sequence[str], keep: Sequence[str]) -> tuple[str, ...]:
    """Refuse a table whose pixel column is there twice, and a column to keep that the table lacks, that
    is a pixel or whose name in the predictions another's takes; returns the columns left out."""
    pixels = {c for c in columns if pixel_index(c) is not None}  # none: every column not kept is a pixel
    if problem := pixel_columns_problem(columns):
        raise DataError(f"{path}: {problem}")
    others = [c for c in columns if c not in pixels]
    for column in keep:
        if column not in columns:
            have = ", ".join(others[:8]) if others else "none but the pixels"
            raise DataError(f"--keep {column}: {path} has no such column (its other columns: {have})")
        if column in pixels:
            raise DataError(f"--keep {column}: a pixel column of {path}; keep an id or other column")
    if len(set(keep)) != len(keep):
        raise DataError(f"--keep: a column named twice ({', '.join(keep)})")
    named: dict[str, str] = {}
    for column in keep:
        name = kept_column_name(column)
        if name in named:
            raise DataError(
                f"--keep {named[name]} --keep {column}: both would be column {name} of the predictions "
                f"(a kept {column} is written as {name}); keep one of them"
            )
        named[name] = column
    return tuple(c for c in others if c not in keep) if pixels else ()


def _is_idx(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(("-ubyte", ".idx", ".idx3")) or path.suffix.lower() == ".gz"


def image_chunks(path: Path | str, chunk_images: int = CHUNK_IMAGES, keep: Sequence[str] = ()) -> ImageChunks:
    """The images of an IDX images file (gzipped or not) or a CSV/Parquet table with one row per image
    (columns `pixel_0`... or, for CSV, plain numbers), `chunk_images` at a time, with the table's columns
    `keep` (an id, a file name) read verbatim beside them. The header is checked here; each chunk's values
    as it is read (errors name the file and the row, counted from the file's first image)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder; give one file: an IDX images file, a .csv or a .parquet table")
    if not path.is_file():
        raise DataError(f"{path}: no such file; give an IDX images file, a .csv or a .parquet table")
    table = path.with_suffix("").suffix.lower() if path.suffix.lower() == ".gz" else ""
    if table in (".csv", ".parquet"):  # read as IDX, it said "bad magic number"
        raise DataError(
            f"{path}: a compressed {table[1:]} table is not read as such; decompress it first (gunzip)"
        )
    if _is_idx(path):
        if keep:
            raise DataError(
                f"--keep {keep[0]}: {path} is an IDX file, images without columns; the predictions are in "
                "its images' order (row 0 first)"
            )
        return _idx_chunks(path, chunk_images)
    if path.suffix.lower() == ".parquet":
        return _parquet_chunks(path, chunk_images, keep)
    if path.suffix.lower() == ".csv":
        return _csv_chunks(path, chunk_images, keep)
    raise DataError(
        f"{path}: unknown format; give an IDX images file (*-idx3-ubyte[.gz]), a .csv or a .parquet table"
    )


def read_images(path: Path | str) -> np.ndarray:
    """All the images of `path` (see image_chunks) as one (count, n_pixels) float64 array."""
    return np.concatenate(list(image_chunks(path).chunks))


def _idx_chunks(path: Path, chunk_images: int) -> ImageChunks:
    source = str(path)
    with path.open("rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    with _opened(path, compressed) as stream:
        head = _read(stream, IDX_HEADER_MAX, source)
    dtype, shape, header_size = idx_header(head, source, expected_ndim=3)
    check_image_shape(dtype, shape, source)
    expected = idx_data_bytes(dtype, shape)
    if not compressed:  # the size is known before any work: refuse a truncated file at once
        actual = path.stat().st_size - header_size
        if actual != expected:
            raise DataError(idx_size_error(source, shape, expected, actual))
    image_bytes = shape[1] * shape[2]

    def chunks() -> Iterator[tuple[np.ndarray, None]]:
        with _opened(path, compressed) as stream:
            _read(stream, header_size, source)
            done = 0
            while done < shape[0]:
                want = min(chunk_images, shape[0] - done) * image_bytes
                data = _read(stream, want, source)
                if len(data) < want:
                    raise DataError(idx_size_error(source, shape, expected, done * image_bytes + len(data)))
                images = np.frombuffer(data, dtype=np.uint8).reshape(-1, image_bytes)
                done += len(images)
                yield images.astype(np.float64), None
            extra = len(_read(stream, 1 << 20, source))
            if extra:
                raise DataError(idx_size_error(source, shape, expected, expected + extra))

    return ImageChunks(shape[0], chunks())


def _opened(path: Path, compressed: bool) -> IO[bytes]:
    return cast("IO[bytes]", gzip.open(path, "rb") if compressed else path.open("rb"))


def _read(stream: IO[bytes], size: int, source: str) -> bytes:
    """Up to `size` bytes (fewer only at the end), with a corrupt gzip stream named as such."""
    parts, left = [], size
    try:
        while left > 0:
            part = stream.read(left)
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: corrupt gzip stream ({exc}); fetch the file again") from None
    return b"".join(parts)


def _parquet_chunks(path: Path, chunk_images: int, keep: Sequence[str]) -> ImageChunks:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read it as parquet: {exc}") from None
    columns = list(parquet.schema_arrow.names)
    left_out = _check_kept(path, columns, keep)
    image_columns = [c for c in columns if c not in keep]

    def chunks() -> Iterator[tuple[np.ndarray, pa.Table | None]]:
        first_row = 0
        with parquet:
            for batch in parquet.iter_batches(batch_size=chunk_images):
                pixels = table_pixels(batch.select(image_columns).to_pandas(), str(path), first_row)
                # the kept columns in Arrow, their types the file's in every chunk (pandas would turn an
                # integer column with a null in one chunk into floats in that chunk alone)
                yield pixels, pa.Table.from_batches([batch.select(list(keep))]) if keep else None
                first_row += batch.num_rows
        if first_row == 0:
            raise DataError(f"{path}: no images (an empty table)")

    return ImageChunks(parquet.metadata.num_rows, chunks(), left_out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_chunks(path: Path, chunk_images: int, keep: Sequence[str]) -> ImageChunks:
    import pandas as pd
    import pyarrow as pa

    try:
        # the first line as written (pandas renames repeated names: 12.5,12.5 -> 12.5, 12.5.1)
        first = list(pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0])
    except Exception as exc:  # pandas raises many kinds
        raise DataError(f"{path}: cannot read it as csv: {exc}") from None
    # a header: pixel_<i> columns, or the column numbers 0,1,...,n-1 pandas writes for unnamed columns
    # (`pd.DataFrame(images).to_csv(path, index=False)`); else the first line is an image
    numbered = [field.strip() for field in first] == [str(i) for i in range(len(first))]
    # the same with pandas' index first (`to_csv(path)`): an empty name, then 0,...,n-1; the index is no pixel
    indexed = first[0].strip() == "" and [field.strip() for field in first[1:]] == [
        str(i) for i in range(len(first) - 1)
    ]
    named = any(pixel_index(field) is not None for field in first)
    header = 0 if numbered or indexed or named else None
    # pandas' index first (an empty name) before pixel_<i> names too: not a column of the input's own
    index_col = 0 if indexed or (named and first[0].strip() == "") else None
    if index_col == 0 and named:
        first = first[1:]
    # an empty field is a missing pixel value, reported as such below
    names = [field for field in first if field.strip() and not _is_number(field)]
    if header is None and names:
        raise DataError(
            f"{path}: its first line is a header without pixel_<i> columns ({', '.join(names[:3])}, ...): "
            "name the columns pixel_0, pixel_1, ... or write the pixel values alone, without a header"
        )
    if header is None and keep:
        raise DataError(
            f"--keep {keep[0]}: {path} has no header, so no named columns; the predictions are in its rows' "
            "order (row 0 first)"
        )
    left_out = _check_kept(path, first, keep) if header is not None else ()
    options: dict[str, Any] = {}
    if keep:  # the kept columns as written ("007", "NA" and an empty field included); a pixel's "" is NaN
        options = {
            "dtype": dict.fromkeys(keep, str),
            "keep_default_na": False,
            "na_values": {c: [""] for c in first if c not in keep},
        }
    kept_schema = pa.schema([(column, pa.string()) for column in keep])

    def chunks() -> Iterator[tuple[np.ndarray, pa.Table | None]]:
        first_row = 0
        try:
            with pd.read_csv(
                path, header=header, index_col=index_col, chunksize=chunk_images, **options
            ) as reader:
                for table in reader:
                    kept = None
                    if keep:
                        kept = pa.Table.from_pandas(table[list(keep)], kept_schema, preserve_index=False)
                        table = table.drop(columns=list(keep))
                    yield table_pixels(table, str(path), first_row), kept
                    first_row += len(table)
        except DataError:
            raise
        except Exception as exc:  # a malformed line far into the file
            raise DataError(f"{path}: cannot read it as csv: {exc}") from None
        if first_row == 0:
            raise DataError(f"{path}: no images (an empty table)")

    return ImageChunks(None, chunks(), left_out)


class PredictionWriter:
    """Predictions written a chunk at a time, as CSV or Parquet (by the suffix), to a temporary file beside
    `path` that replaces it when the writer closes without an error (and is removed when it does not:
    system.files.replaced_via_temp)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"{self.path}: write predictions to a .csv or a .parquet file")
        self._stack: ExitStack | None = None
        self._temporary: Path | None = None
        self._csv: IO[str] | None = None
        self._parquet: Any = None
        self.rows = 0

    def __enter__(self) -> PredictionWriter:
        with ExitStack() as stack:
            self._temporary = stack.enter_context(replaced_via_temp(self.path, self.path.suffix))
            self._stack = stack.pop_all()
        return self

    def write(self, predictions: pd.DataFrame, kept: pa.Table | None = None) -> None:
        """Append `predictions`, after the same rows of the input's `kept` columns (see kept_column_name)."""
        assert self._temporary is not None, "use PredictionWriter as a context manager"
        if kept is not None:
            kept = kept.rename_columns([kept_column_name(c) for c in kept.column_names])
        if self.path.suffix.lower() == ".csv":
            if self._csv is None:
                self._csv = self._temporary.open("w", encoding="utf-8", newline="")  # as pandas reads
            if kept is not None:
                import pandas as pd

                # Arrow types: an integer column with a null stays integers (plain pandas writes 1.0)
                predictions = pd.concat([kept.to_pandas(types_mapper=pd.ArrowDtype), predictions], axis=1)
            predictions.to_csv(self._csv, index=False, header=self.rows == 0)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(predictions, preserve_index=False)
            if kept is not None:
                table = pa.Table.from_arrays(
                    [*kept.columns, *table.columns], names=[*kept.column_names, *table.column_names]
                )
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._temporary, table.schema)
            self._parquet.write_table(table)
        self.rows += len(predictions)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: Any) -> None:
        assert self._stack is not None
        try:  # the last writes happen here (a buffer's flush, Parquet's footer): a full disk fails here
            for handle in (self._csv, self._parquet):
                if handle is not None:
                    handle.close()
        except BaseException as failed:  # the temporary file is incomplete: removed, `path` left as it was
            self._stack.__exit__(type(failed), failed, failed.__traceback__)
            raise
        self._stack.__exit__(kind, value, trace)  # renames it over `path` on success, removes it on an error


def write_predictions(predictions: pd.DataFrame, path: Path | str) -> None:
    """Write `predictions` whole, atomically, as CSV or Parquet (by the suffix)."""
    with PredictionWriter(path) as writer:
        writer.write(predictions)


def check_output_file(images: Path | str, output: Path | str, writable: bool = True) -> None:
    """Before any work: refuse an `output` that is the `images` file itself (by another name too: the
    predictions would replace the images), that is not .csv or .parquet, or (with `writable`: making its
    folder) that cannot be written there (its folder a file, not writable)."""
    images, output = Path(images), Path(output)
    same = output.resolve() == images.resolve()
    if not same and output.exists() and images.exists():
        same = output.samefile(images)
    if same:
        raise DataError(
            f"--output {output} is the input file {images}: the predictions would replace the images; "
            f"write them to another file (say {images.with_name('predictions.csv')})"
        )
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{output}: write predictions to a .csv or a .parquet file")
    if output.is_dir():
        raise DataError(
            f"--output {output} is a folder; write the predictions to a file in it ({output}/predictions.csv)"
        )
    if not writable:
        return
    try:
        check_writable(output)
    except OSError as exc:
        blocking = next((folder for folder in output.parents if folder.is_file()), None)
        why = f"{blocking} is a file, not a folder" if blocking else f"{exc.strerror or exc}"
        raise DataError(
            f"--output {output}: cannot write there ({why}); write the predictions elsewhere"
        ) from None


def predict_file(
    model: Any,
    images: Path | str,
    output: Path | str,
    on_chunk: Callable[[int, int | None], None] | None = None,
    chunk_images: int = CHUNK_IMAGES,
    keep: Sequence[str] = (),
) -> tuple[int, float]:
    """Predict every image of `images` with `model` (see predict_frame) into `output`, a chunk at a time,
    each row after the input's columns `keep` (see kept_column_name); `on_chunk(images done, images in
    all or None)` after each chunk. Returns how many were predicted and the brightest pixel value of them
    all (see inference.scale_warning)."""
    check_output_file(images, output)
    brightest = 0.0
    with PredictionWriter(output) as writer:  # checks the output's suffix before any work
        source = image_chunks(images, chunk_images, keep)
        for pixels, kept in source.pieces:
            writer.write(predict_frame(model, pixels, str(images)), kept)
            brightest = max(brightest, float(pixels.max()))
            if on_chunk is not None:
                on_chunk(writer.rows, source.count)
        return writer.rows, brightest
