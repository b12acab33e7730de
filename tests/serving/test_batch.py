"""Batch inference on files, a chunk at a time: every format read the same whole or in chunks, errors naming
the row counted from the file's start, predictions written whole or not at all."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import RandomForestClassifier

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.idx import encode_idx
from mnist_lab.core.settings import FeatureSettings
from mnist_lab.serving.batch import (
    PredictionWriter,
    image_chunks,
    predict_file,
    read_images,
    write_predictions,
)
from mnist_lab.serving.inference import predict_frame

IMAGES = np.random.default_rng(0).integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
LABELS = np.arange(30) % 3


def test_idx_csv_and_parquet_give_the_same_pixels(tmp_path) -> None:
    flat = IMAGES.reshape(30, -1).astype(np.float64)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(IMAGES)))
    (tmp_path / "images-idx3-ubyte").write_bytes(encode_idx(IMAGES))
    columns = [f"pixel_{i}" for i in range(16)]
    table = pd.DataFrame(flat.astype(np.int64), columns=columns)
    table[columns[::-1]].assign(id=range(30)).to_csv(tmp_path / "shuffled.csv", index=False)  # any order
    table.to_csv(tmp_path / "plain.csv", index=False, header=False)
    table.to_parquet(tmp_path / "images.parquet")
    # pandas' header for unnamed columns, 0,1,...,15: a header, not a first image (every row was one off)
    pd.DataFrame(flat.astype(np.int64)).to_csv(tmp_path / "numbered.csv", index=False)
    pd.DataFrame(flat.astype(np.int64)).to_csv(tmp_path / "indexed.csv")  # and its index first: no pixel
    names = ("images-idx3-ubyte.gz", "images-idx3-ubyte", "shuffled.csv", "plain.csv", "images.parquet",
             "numbered.csv", "indexed.csv")  # fmt: skip
    for name in names:
        assert np.array_equal(read_images(tmp_path / name), flat), name


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("pixel_0,pixel_1\n1,abc\n", "row 0, column pixel_1 is 'abc'"),
        ("pixel_0,pixel_1\n1,300\n", "row 0, pixel 1 is 300.0"),
        ("pixel_0,pixel_1\n1,-1\n", "row 0, pixel 1 is -1.0"),
        ("pixel_0,pixel_1\n1,\n", "row 0, pixel 1 is missing (null, an empty field or NaN)"),
        ("pixel_0,pixel_1\n", "no images (an empty table)"),
        (
            "px0,px1,px2,px3\n1,2,3,4\n",
            "first line is a header without pixel_<i> columns (px0, px1, px2, ...)",
        ),
        ("id,label\n1,2\n", "header without pixel_<i> columns (id, label, ...): name the columns pixel_0"),
        ("1,\n", "row 0, pixel 1 is missing (null, an empty field or NaN)"),
        ("12.5,12.5,3,300\n", "row 0, pixel 3 is 300.0"),  # repeated values, no header: read as pixels
    ],
)
def test_bad_tables_are_named(tmp_path, content: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match="bad.csv") as info:
        read_images(path)
    assert expected in str(info.value)


def test_missing_and_unknown_files(tmp_path) -> None:
    with pytest.raises(DataError, match="a folder; give one file: an IDX images file, a .csv or a .parquet"):
        image_chunks(tmp_path)  # it said "no such file" of a folder that exists
    with pytest.raises(DataError, match="no such file"):
        read_images(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unknown format; give an IDX images file"):
        read_images(tmp_path / "x.json")
    (tmp_path / "labels-idx1-ubyte").write_bytes(encode_idx(LABELS.astype(np.uint8)))
    with pytest.raises(DataError, match="is this a labels file"):
        read_images(tmp_path / "labels-idx1-ubyte")
    (tmp_path / "images.csv.gz").write_bytes(gzip.compress(b"1,2\n"))  # read as IDX: "bad magic number"
    with pytest.raises(
        DataError, match=r"images.csv.gz: a compressed csv table is not read as such; decompress"
    ):
        read_images(tmp_path / "images.csv.gz")


def test_suffixes_are_read_whatever_their_case(tmp_path) -> None:
    flat = IMAGES.reshape(30, -1).astype(np.float64)
    pd.DataFrame(flat.astype(int)).to_csv(tmp_path / "IMAGES.CSV", index=False, header=False)
    pd.DataFrame(flat, columns=[f"pixel_{i}" for i in range(16)]).to_parquet(tmp_path / "images.Parquet")
    for name in ("IMAGES.CSV", "images.Parquet"):
        assert np.array_equal(read_images(tmp_path / name), flat), name
    assert predict_file(ShapeRecorder(), tmp_path / "IMAGES.CSV", tmp_path / "OUT.CSV")[0] == 30
    assert (tmp_path / "OUT.CSV").read_text().startswith("label,")  # CSV, not Parquet


def test_predictions_are_written_whole_or_not_at_all(tmp_path) -> None:
    frame = pd.DataFrame({"label": [1, 2], "probability_1": [0.9, 0.1]})
    write_predictions(frame, tmp_path / "p.parquet")
    assert pd.read_parquet(tmp_path / "p.parquet").equals(frame)
    write_predictions(frame, tmp_path / "p.csv")
    assert pd.read_csv(tmp_path / "p.csv").equals(frame)
    with pytest.raises(DataError, match="write predictions to a .csv or a .parquet file"):
        write_predictions(frame, tmp_path / "p.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.parquet"]


def _files(tmp_path) -> dict[str, object]:
    """The 30 images in every input format."""
    columns = [f"pixel_{i}" for i in range(16)]
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(np.int64), columns=columns)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(IMAGES)))
    (tmp_path / "images-idx3-ubyte").write_bytes(encode_idx(IMAGES))
    table.to_csv(tmp_path / "named.csv", index=False)
    table.to_csv(tmp_path / "plain.csv", index=False, header=False)
    table.to_parquet(tmp_path / "images.parquet")
    return {"idx.gz": tmp_path / "images-idx3-ubyte.gz", "idx": tmp_path / "images-idx3-ubyte",
            "csv": tmp_path / "named.csv", "plain csv": tmp_path / "plain.csv",
            "parquet": tmp_path / "images.parquet"}  # fmt: skip


def test_chunks_of_every_format_are_the_whole_file_in_order(tmp_path) -> None:
    flat = IMAGES.reshape(30, -1).astype(np.float64)
    for name, path in _files(tmp_path).items():
        source = image_chunks(path, chunk_images=7)
        chunks = list(source.chunks)
        assert [len(c) for c in chunks] == [7, 7, 7, 7, 2], name
        assert np.array_equal(np.concatenate(chunks), flat), name
        assert source.count == (None if "csv" in name else 30), name


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_bad_value_far_into_a_table_is_named_by_its_row_in_the_file(tmp_path, suffix: str) -> None:
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(np.float64), columns=[f"pixel_{i}" for i in range(16)])
    table.iloc[23, 5] = 300
    path = tmp_path / f"bad{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    chunks = image_chunks(path, chunk_images=7).chunks
    assert len(next(chunks)) == 7  # read lazily: the bad row is found when its chunk is
    with pytest.raises(DataError, match=r"row 23, pixel 5 is 300.0"):
        list(chunks)
    text = table.astype(object)
    text.iloc[16, 2] = "x"
    text.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(DataError, match=r"row 16, column pixel_2 is 'x'"):
        list(image_chunks(tmp_path / "text.csv", chunk_images=7).chunks)


def test_truncated_and_overlong_idx_files_are_refused(tmp_path) -> None:
    whole = encode_idx(IMAGES)
    (tmp_path / "short-idx3-ubyte").write_bytes(whole[:-5])
    with pytest.raises(
        DataError, match=r"truncated: header says shape \(30, 4, 4\).*; fetch or copy the file"
    ):
        image_chunks(tmp_path / "short-idx3-ubyte")  # before any image is read: the size is known
    (tmp_path / "short-idx3-ubyte.gz").write_bytes(gzip.compress(whole[:-5]))
    with pytest.raises(DataError, match=r"truncated: .* file has 475 bytes"):
        list(image_chunks(tmp_path / "short-idx3-ubyte.gz", chunk_images=7).chunks)
    (tmp_path / "long-idx3-ubyte.gz").write_bytes(gzip.compress(whole + b"\0\0"))
    with pytest.raises(DataError, match=r"has trailing bytes: .* file has 482 bytes; the writer miscounted"):
        list(image_chunks(tmp_path / "long-idx3-ubyte.gz", chunk_images=7).chunks)
    (tmp_path / "cut-idx3-ubyte.gz").write_bytes(gzip.compress(whole)[:-30])
    with pytest.raises(DataError, match="corrupt gzip stream"):
        list(image_chunks(tmp_path / "cut-idx3-ubyte.gz").chunks)
    (tmp_path / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(LABELS.astype(np.uint8))))
    with pytest.raises(DataError, match="is this a labels file"):
        image_chunks(tmp_path / "labels-idx1-ubyte.gz")


class ShapeRecorder:
    """A model that records the size of every batch it is asked about."""

    classes_ = np.array([0, 1, 2])
    n_features_in_ = 16

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_proba(self, frame):
        self.batches.append(len(frame))
        return np.full((len(frame), 3), 1 / 3)

    def predict(self, frame):
        return np.zeros(len(frame), dtype=np.int64)


def test_predict_file_holds_one_chunk_at_a_time_and_reports_progress(tmp_path) -> None:
    path = _files(tmp_path)["idx.gz"]
    model, progress = ShapeRecorder(), []
    count, brightest = predict_file(
        model, path, tmp_path / "out.csv", lambda d, t: progress.append((d, t)), 7
    )
    assert count == 30 and model.batches == [7, 7, 7, 7, 2]
    assert brightest == IMAGES.max()  # of every chunk, not the last
    assert progress == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_predictions_are_the_whole_files_predictions(tmp_path, suffix: str) -> None:
    pixels = IMAGES.reshape(30, -1)
    featurizer = fit_featurizer(pixels, FeatureSettings(), seed=0)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    model = full_model(featurizer, forest.fit(featurizer.transform(pixels), LABELS))
    whole = tmp_path / f"whole{suffix}"
    write_predictions(predict_frame(model, pixels.astype(np.float64)), whole)
    for name, path in _files(tmp_path).items():
        out = tmp_path / f"chunked-{name.replace(' ', '-')}{suffix}"
        assert predict_file(model, path, out, chunk_images=7)[0] == 30
        if suffix == ".csv":
            assert out.read_bytes() == whole.read_bytes(), name
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(whole))


def test_a_failure_late_in_the_input_leaves_the_old_output_untouched(tmp_path) -> None:
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(int), columns=[f"pixel_{i}" for i in range(16)])
    table.iloc[29, 0] = -1
    table.to_csv(tmp_path / "bad.csv", index=False)
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"predictions{suffix}"
        out.write_text("the previous predictions")
        with pytest.raises(DataError, match="row 29, pixel 0 is -1.0"):
            predict_file(ShapeRecorder(), tmp_path / "bad.csv", out, chunk_images=7)
        assert out.read_text() == "the previous predictions"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["bad.csv", "predictions.csv", "predictions.parquet"]  # no temporary files
    with pytest.raises(DataError, match="write predictions to a .csv or a .parquet file"):
        predict_file(ShapeRecorder(), tmp_path / "bad.csv", tmp_path / "out.json")
    with pytest.raises(DataError, match="no such file"):
        predict_file(ShapeRecorder(), tmp_path / "nope.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.csv").exists()
    with pytest.raises(AssertionError, match="context manager"):
        PredictionWriter(tmp_path / "x.csv").write(table)


def test_the_input_file_is_never_the_output(tmp_path, monkeypatch) -> None:
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(int), columns=[f"pixel_{i}" for i in range(16)])
    images = tmp_path / "images.csv"
    table.to_csv(images, index=False)
    before = images.read_bytes()
    (tmp_path / "link.csv").symlink_to(images)
    monkeypatch.chdir(tmp_path)
    for output in (images, "images.csv", "./sub/../images.csv", tmp_path / "link.csv"):
        with pytest.raises(DataError, match=r"is the input file .*images.csv.*predictions.csv"):
            predict_file(ShapeRecorder(), images, output)
    assert images.read_bytes() == before
    assert predict_file(ShapeRecorder(), images, tmp_path / "predictions.csv")[0] == 30


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path) -> None:
    """Refused before the model is asked (it failed after the model had loaded, with a traceback)."""
    images = tmp_path / "images.csv"
    pd.DataFrame(IMAGES.reshape(30, -1).astype(int)).to_csv(images, index=False, header=False)
    (tmp_path / "taken").write_text("a file")
    model = ShapeRecorder()
    with pytest.raises(DataError) as refused:
        predict_file(model, images, tmp_path / "taken" / "out.csv")
    assert str(refused.value) == (
        f"--output {tmp_path / 'taken' / 'out.csv'}: cannot write there ({tmp_path / 'taken'} is a file, not "
        "a folder); write the predictions elsewhere"
    )
    if Path("/proc/self").is_dir():  # a folder nobody can create files in, root included
        with pytest.raises(DataError, match=r"--output /proc/out.csv: cannot write there \("):
            predict_file(model, images, "/proc/out.csv")
    assert model.batches == []
    assert predict_file(model, images, tmp_path / "new" / "folder" / "out.csv")[0] == 30  # folders made


def _table_with_ids(tmp_path: Path, suffix: str) -> Path:
    """The 30 images with an id (leading zeros, "NA", an empty one), a nullable integer column whose only
    null is in the third chunk of 7, a file name, and the true label."""
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(np.int64), columns=[f"pixel_{i}" for i in range(16)])
    ids = [f"{i:03d}" for i in range(30)]
    ids[3], ids[4] = "NA", ""
    table.insert(0, "id", ids)
    table["batch"] = pd.array([i // 10 if i != 20 else None for i in range(30)], dtype="Int64")
    table["file"] = [f"scan-{i}.png" for i in range(30)]
    table["label"] = LABELS
    path = tmp_path / f"labelled{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    return path


@pytest.mark.parametrize("source", [".csv", ".parquet"])
@pytest.mark.parametrize("target", [".csv", ".parquet"])
def test_kept_columns_are_copied_beside_each_prediction_as_written(tmp_path, source, target) -> None:
    """`--keep id`: the rows of the predictions can be joined back to the input's (they could only be
    matched by their order); values as written, the true `label` as input_label."""
    images = _table_with_ids(tmp_path, source)
    plain, kept = tmp_path / f"plain{target}", tmp_path / f"kept{target}"
    assert predict_file(ShapeRecorder(), images, plain, chunk_images=7)[0] == 30
    keep = ["id", "batch", "label"]
    assert predict_file(ShapeRecorder(), images, kept, chunk_images=7, keep=keep)[0] == 30
    if target == ".csv":
        written = pd.read_csv(kept, dtype={"id": str}, keep_default_na=False)
        expected_ids = [f"{i:03d}" for i in range(30)]
        expected_ids[3], expected_ids[4] = "NA", ""
        assert written["id"].tolist() == expected_ids
        assert written["batch"].tolist()[19:22] == ["1", "", "2"]  # the one null, an empty field
    else:
        written = pd.read_parquet(kept)
        assert written["id"].tolist()[:5] == ["000", "001", "002", "NA", ""]
        if source == ".csv":  # a CSV's columns are kept as the text they are
            assert written["batch"].tolist()[19:22] == ["1", "", "2"]
        else:  # a Parquet file's with their types, in every chunk (pandas made the third chunk's floats)
            assert str(pq.read_schema(kept).field("batch").type) == "int64"
            assert written["batch"].isna().tolist() == [i == 20 for i in range(30)]
    assert list(written.columns[:4]) == ["id", "batch", "input_label", "label"]
    assert written["input_label"].astype(int).tolist() == LABELS.tolist()
    predictions = pd.read_csv(plain) if target == ".csv" else pd.read_parquet(plain)
    pd.testing.assert_frame_equal(written[predictions.columns].astype(predictions.dtypes), predictions)


def test_columns_that_cannot_be_kept_are_named_before_any_work(tmp_path) -> None:
    csv = _table_with_ids(tmp_path, ".csv")
    parquet = _table_with_ids(tmp_path, ".parquet")
    for path in (csv, parquet):
        assert image_chunks(path).left_out == ("id", "batch", "file", "label")  # said by `predict`
        assert image_chunks(path, keep=["file"]).left_out == ("id", "batch", "label")
        with pytest.raises(
            DataError, match=r"--keep ID: .* has no such column \(its other columns: id, batch"
        ):
            image_chunks(path, keep=["ID"])
        with pytest.raises(DataError, match="--keep pixel_3: a pixel column"):
            image_chunks(path, keep=["pixel_3"])
        with pytest.raises(DataError, match="--keep: a column named twice"):
            image_chunks(path, keep=["id", "id"])
    files = _files(tmp_path)
    for name in ("idx.gz", "idx"):
        with pytest.raises(DataError, match="--keep id: .* an IDX file, images without columns"):
            image_chunks(files[name], keep=["id"])
    with pytest.raises(DataError, match="--keep id: .*plain.csv has no header, so no named columns"):
        image_chunks(files["plain csv"], keep=["id"])
    assert image_chunks(files["plain csv"]).left_out == ()
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match="no such column"):
        predict_file(ShapeRecorder(), csv, out, keep=["nope"])
    assert not out.exists()


def test_a_failure_while_closing_the_output_leaves_the_old_output_untouched(tmp_path, monkeypatch) -> None:
    """The last writes happen when the file closes (a buffer's flush, Parquet's footer): a full disk there
    renamed the incomplete file over the previous predictions."""
    import pyarrow.parquet

    images = tmp_path / "images.csv"
    pd.DataFrame(IMAGES.reshape(30, -1).astype(int)).to_csv(images, index=False, header=False)

    class FullDisk:  # the text file the CSV is written to, whose last flush fails
        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            return self.handle.write(text)

        def close(self) -> None:
            self.handle.close()
            raise OSError(28, "No space left on device")

    failed: list[object] = []

    def parquet_full_disk(self) -> None:
        if self not in failed:  # once: the writer's own finaliser closes it again
            failed.append(self)
            raise OSError(28, "No space left on device")

    opened = Path.open
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"predictions{suffix}"
        out.write_text("the previous predictions")
        with monkeypatch.context() as patch:
            patch.setattr(Path, "open", lambda self, *a, **k: FullDisk(opened(self, *a, **k)))
            patch.setattr(pyarrow.parquet.ParquetWriter, "close", parquet_full_disk)
            with pytest.raises(OSError, match="No space left"):
                predict_file(ShapeRecorder(), images, out)
        assert out.read_text() == "the previous predictions"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["images.csv", "predictions.csv", "predictions.parquet"]


def test_pixel_columns_are_pixel_and_digits(tmp_path) -> None:
    """`pixel_count` is no pixel (it broke the sorting of the pixels: a traceback for Parquet); a pixel
    column there twice is refused by name; pandas' index before pixel_<i> names is no column."""
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(int), columns=[f"pixel_{i}" for i in range(16)])
    table["pixel_count"] = 16
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"counted{suffix}"
        table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
        chunks = image_chunks(path, keep=["pixel_count"])
        assert np.array_equal(np.concatenate(list(chunks.chunks)), IMAGES.reshape(30, -1))
        assert image_chunks(path).left_out == ("pixel_count",)
    twice = tmp_path / "twice.csv"
    twice.write_text("pixel_0,pixel_1,pixel_0\n1,2,3\n")
    with pytest.raises(DataError, match=r"twice.csv: its 3 pixel columns must be pixel_0 ... pixel_2, each"):
        image_chunks(twice)
    # a gap or a repeat shifted every pixel after it: predicted anyway, wrongly (the server refused)
    for name, columns, said in (
        ("gap", {"pixel_15": "pixel_16"}, "missing pixel_15; beyond them pixel_16; twice none"),
        ("repeat", {"pixel_15": "pixel_3"}, "missing pixel_15; beyond them none; twice pixel_3"),
    ):
        for suffix in (".csv", ".parquet"):
            path = tmp_path / f"{name}{suffix}"
            shifted = table.drop(columns="pixel_count").rename(columns=columns)
            if suffix == ".csv":
                shifted.to_csv(path, index=False)
            else:  # pandas refuses to write a name twice; Arrow does not
                arrays = [pa.array(shifted.iloc[:, i]) for i in range(shifted.shape[1])]
                pq.write_table(pa.Table.from_arrays(arrays, names=list(shifted.columns)), path)
            with pytest.raises(DataError, match=f"{name}{suffix}: its 16 pixel columns .*; {said}"):
                image_chunks(path)
    padded = table.drop(columns="pixel_count").rename(columns={"pixel_5": "pixel_05"})  # not a pixel name
    padded.to_parquet(tmp_path / "padded.parquet")
    with pytest.raises(DataError, match="its 15 pixel columns must be pixel_0 ... pixel_14.*pixel_15"):
        image_chunks(tmp_path / "padded.parquet")
    indexed = tmp_path / "indexed.csv"
    table.drop(columns="pixel_count").to_csv(indexed)  # with pandas' index, its header an empty name
    assert image_chunks(indexed).left_out == ()
    assert np.array_equal(read_images(indexed), IMAGES.reshape(30, -1))


def test_kept_columns_must_keep_distinct_names(tmp_path) -> None:
    path = tmp_path / "both.csv"
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(int), columns=[f"pixel_{i}" for i in range(16)])
    table["label"], table["input_label"] = LABELS, LABELS
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match="--keep input_label --keep label: both would be column input_label"):
        image_chunks(path, keep=["input_label", "label"])


def test_kept_text_is_written_as_utf8_whatever_the_locale(tmp_path) -> None:
    """The input is read as UTF-8; the output was written in the locale's encoding (ASCII under LC_ALL=C:
    a UnicodeEncodeError at the first accented file name)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "named.csv"
    table = pd.DataFrame(IMAGES.reshape(30, -1).astype(int), columns=[f"pixel_{i}" for i in range(16)])
    table.insert(0, "file", [f"chiffre_é_{i}.png" for i in range(30)])
    table.to_csv(path, index=False)
    out = tmp_path / "out.csv"
    script = (
        "import sys; from mnist_lab.serving.batch import predict_file; "
        "from tests.serving.test_batch import ShapeRecorder; "
        "predict_file(ShapeRecorder(), sys.argv[1], sys.argv[2], keep=['file'])"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(out)],
        cwd=Path(__file__).parents[2], env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_csv(out, encoding="utf-8")["file"].tolist()[:1] == ["chiffre_é_0.png"]


def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path) -> None:
    images = tmp_path / "images.csv"
    pd.DataFrame(IMAGES.reshape(30, -1).astype(int)).to_csv(images, index=False, header=False)
    (tmp_path / "out.csv").mkdir()
    model = ShapeRecorder()
    with pytest.raises(DataError, match=r"--output .*out.csv is a folder; write the predictions to a file"):
        predict_file(model, images, tmp_path / "out.csv")
    assert model.batches == []
