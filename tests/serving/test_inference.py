import gzip

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.idx import encode_idx
from mnist_lab.core.settings import FeatureSettings
from mnist_lab.serving.inference import predict_frame, read_images, write_predictions

IMAGES = np.random.default_rng(0).integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
LABELS = np.arange(30) % 3


def model(classifier):
    pixels = IMAGES.reshape(30, -1)
    featurizer = fit_featurizer(pixels, FeatureSettings(), seed=0)
    return full_model(featurizer, classifier.fit(featurizer.transform(pixels), LABELS))


def test_idx_csv_and_parquet_give_the_same_pixels(tmp_path) -> None:
    flat = IMAGES.reshape(30, -1).astype(np.float64)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(IMAGES)))
    (tmp_path / "images-idx3-ubyte").write_bytes(encode_idx(IMAGES))
    columns = [f"pixel_{i}" for i in range(16)]
    table = pd.DataFrame(flat.astype(np.int64), columns=columns)
    table[columns[::-1]].assign(id=range(30)).to_csv(tmp_path / "shuffled.csv", index=False)  # any order
    table.to_csv(tmp_path / "plain.csv", index=False, header=False)
    table.to_parquet(tmp_path / "images.parquet")
    for name in ("images-idx3-ubyte.gz", "images-idx3-ubyte", "shuffled.csv", "plain.csv", "images.parquet"):
        assert np.array_equal(read_images(tmp_path / name), flat), name


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("pixel_0,pixel_1\n1,abc\n", "row 0, column pixel_1 is 'abc'"),
        ("pixel_0,pixel_1\n1,300\n", "row 0, pixel 1 is 300.0"),
        ("pixel_0,pixel_1\n1,-1\n", "row 0, pixel 1 is -1.0"),
        ("pixel_0,pixel_1\n1,\n", "row 0, pixel 1 is nan"),
        ("pixel_0,pixel_1\n", "no images (an empty table)"),
    ],
)
def test_bad_tables_are_named(tmp_path, content: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match="bad.csv") as info:
        read_images(path)
    assert expected in str(info.value)


def test_missing_and_unknown_files(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_images(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unknown format; give an IDX images file"):
        read_images(tmp_path / "x.json")
    (tmp_path / "labels-idx1-ubyte").write_bytes(encode_idx(LABELS.astype(np.uint8)))
    with pytest.raises(DataError, match="is this a labels file"):
        read_images(tmp_path / "labels-idx1-ubyte")


def test_predictions_have_labels_and_probabilities_or_scores() -> None:
    pixels = IMAGES.reshape(30, -1).astype(np.float64)
    forest = model(RandomForestClassifier(n_estimators=5, random_state=0))
    out = predict_frame(forest, pixels)
    assert list(out.columns) == ["label", "probability_0", "probability_1", "probability_2"]
    assert np.allclose(out.filter(like="probability").sum(axis=1), 1.0)
    assert (
        out["label"].to_numpy()
        == forest.predict(pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(16)]))
    ).all()
    hinge = predict_frame(model(SGDClassifier(random_state=0)), pixels)
    assert list(hinge.columns) == ["label", "score_0", "score_1", "score_2"]
    with pytest.raises(DataError, match="images have 15 pixels, the model takes 16"):
        predict_frame(forest, pixels[:, :15], "batch.csv")


def test_predictions_are_written_whole_or_not_at_all(tmp_path) -> None:
    frame = pd.DataFrame({"label": [1, 2], "probability_1": [0.9, 0.1]})
    write_predictions(frame, tmp_path / "p.parquet")
    assert pd.read_parquet(tmp_path / "p.parquet").equals(frame)
    write_predictions(frame, tmp_path / "p.csv")
    assert pd.read_csv(tmp_path / "p.csv").equals(frame)
    with pytest.raises(DataError, match="write predictions to a .csv or a .parquet file"):
        write_predictions(frame, tmp_path / "p.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.parquet"]


def test_requests_in_every_serving_format_give_the_same_pixels() -> None:
    from mnist_lab.serving.inference import request_pixels

    pixels = IMAGES.reshape(30, -1)[:2].astype(np.float64)
    columns = [f"pixel_{i}" for i in range(16)]
    forms = [
        pd.DataFrame(pixels.astype(np.int64), columns=columns),  # dataframe_split / records / CSV
        pd.DataFrame(pixels, columns=columns)[columns[::-1]],  # columns in any order
        pd.DataFrame(pixels),  # dataframe_split without "columns"
        {c: pixels[:, i].tolist() for i, c in enumerate(columns)},  # inputs: a dict of columns
        pixels.astype(np.int64).tolist(),  # instances / inputs: lists of pixel lists
        np.asarray(pixels, dtype=np.float32),
    ]
    for form in forms:
        assert np.array_equal(request_pixels(form, 16), pixels), type(form)
    assert request_pixels(pixels[0].tolist(), 16).shape == (1, 16)  # one image alone


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ([[1] * 15], "expected images of 16 pixels, shape (count, 16); got shape (1, 15)"),
        ([[1] * 17], "got shape (1, 17)"),
        ([], "got shape (0,)"),
        (np.zeros((0, 16)), "no images"),
        ([["abc"] * 16], "pixel values must be numbers 0-255"),
        ([[300] * 16], "row 0, pixel 0 is 300.0"),
        ([[None] * 16], "row 0, pixel 0 is nan"),
        ({"pixel_0": [1], "pixel_1": [2]}, "missing ['pixel_2', 'pixel_3'"),
        ({**{f"pixel_{i}": [1] for i in range(16)}, "extra": [1]}, "unexpected ['extra']"),
        ({"pixel_0": [1, 2], "pixel_1": [1]}, "malformed columns"),
    ],
)
def test_bad_requests_say_what_is_wrong(request_body, expected: str) -> None:
    from mnist_lab.serving.inference import request_pixels

    with pytest.raises(DataError) as info:
        request_pixels(request_body, 16)
    assert expected in str(info.value)


def test_the_served_model_uses_one_thread_per_request() -> None:
    from mnist_lab.serving.pyfunc import DigitClassifier

    served = DigitClassifier(model(RandomForestClassifier(n_estimators=5, n_jobs=-1, random_state=0)), 16)
    assert served.pipeline.named_steps["classifier"].n_jobs == 1
    answer = served.predict(None, IMAGES.reshape(30, -1)[:2].tolist())
    assert list(answer.columns)[:2] == ["label", "probability_0"] and len(answer) == 2


def test_a_value_that_is_not_a_number_is_named_by_row_and_column() -> None:
    import pandas as pd

    from mnist_lab.serving.inference import request_pixels, table_pixels

    with pytest.raises(
        DataError, match=r"in.csv: pixel values must be numbers 0-255; row 2, column pixel_1 is 'zz'"
    ):
        table_pixels(pd.DataFrame({"pixel_0": [1, 2, 3], "pixel_1": ["3", "4", "zz"]}), "in.csv")
    with pytest.raises(
        DataError, match=r"request: pixel values must be numbers 0-255; row 0, column 3 is 'x'"
    ):
        request_pixels([[0, 0, 0, "x"]], 4)
    with pytest.raises(DataError, match="request: each image needs 4 pixel values; row 1 has 3"):
        request_pixels([[0, 0, 0, 0], [0, 0, 0]], 4)
