import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import fit_featurizer, full_model, pixel_frame
from mnist_lab.core.settings import FeatureSettings
from mnist_lab.serving.inference import labels_are_most_probable, predict_frame, scale_warning

IMAGES = np.random.default_rng(0).integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
LABELS = np.arange(30) % 3


def model(classifier):
    pixels = IMAGES.reshape(30, -1)
    featurizer = fit_featurizer(pixels, FeatureSettings(), seed=0)
    return full_model(featurizer, classifier.fit(featurizer.transform(pixels), LABELS))


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
    # images as rows x cols (the natural shape of an image), many or one
    assert np.array_equal(request_pixels(pixels.reshape(2, 4, 4).tolist(), 16), pixels)
    assert np.array_equal(request_pixels(pixels[0].reshape(4, 4).tolist(), 16), pixels[:1])


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ([[1] * 15], "expected images of 16 pixels, shape (count, 16) or (count, 4, 4); got shape (1, 15)"),
        ([[[1] * 8] * 2], "got shape (1, 2, 8)"),  # 16 values, but not a 4x4 image
        ([[1] * 17], "got shape (1, 17)"),
        ([], "got shape (0,)"),
        (np.zeros((0, 16)), "no images"),
        ([["abc"] * 16], "pixel values must be numbers 0-255"),
        ([[300] * 16], "row 0, pixel 0 is 300.0"),
        ([[None] * 16], "row 0, pixel 0 is missing (null, an empty field or NaN)"),
        # past the first row, where the quick check (min and max) sees them: NaN, infinity, below 0
        (
            [[1] * 16, [1] * 8 + [float("nan")] + [1] * 7],
            "row 1, pixel 8 is missing (null, an empty field or NaN)",
        ),
        ([[0] * 16, [0] * 15 + [float("inf")]], "row 1, pixel 15 is inf"),
        ([[0] * 16, [-1] + [0] * 15], "row 1, pixel 0 is -1.0"),
        ([[0] * 16, [255.5] * 16], "row 1, pixel 0 is 255.5"),
        ({"pixel_0": [1], "pixel_1": [2]}, "missing ['pixel_2', 'pixel_3'"),
        # how many: a one-column table lacks 15, not the 5 listed
        ({"pixel_0": [1]}, "missing ['pixel_1', 'pixel_2', 'pixel_3', 'pixel_4', 'pixel_5'] and 10 more"),
        (np.array("abc"), "pixel values must be numbers 0-255; got 'abc' alone, not images"),  # not np.str_
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
    # numbers written as text are numbers, as the server reads them (a Parquet column of strings was
    # refused with "a value is not a number", naming no cell, where `serve` answered it)
    assert table_pixels(
        pd.DataFrame({"pixel_0": [1, 2], "pixel_1": ["3", " 4.5"]}), "in.parquet"
    ).tolist() == [
        [1.0, 3.0],
        [2.0, 4.5],
    ]
    assert request_pixels([[1, 3], [2, " 4.5"]], 2).tolist() == [[1.0, 3.0], [2.0, 4.5]]
    with pytest.raises(DataError, match=r"row 1, column pixel_1 is True"):
        table_pixels(pd.DataFrame({"pixel_0": [1, 2], "pixel_1": [3, True]}, dtype=object), "in.parquet")
    with pytest.raises(
        DataError, match=r"in.parquet: pixel values must be numbers 0-255; row 11, column pixel_1 is 'x'"
    ):
        table_pixels(pd.DataFrame({"pixel_0": [1, 2], "pixel_1": ["3", "x"]}), "in.parquet", first_row=10)
    # a kind of value that is no number: named (a date column was a TypeError traceback from astype)
    dates = pd.DataFrame({"pixel_0": [1, 2], "pixel_1": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    with pytest.raises(
        DataError, match=r"in.parquet: pixel values must be numbers 0-255; column pixel_1 holds datetime64"
    ):
        table_pixels(dates, "in.parquet")
    with pytest.raises(
        DataError, match=r"request: pixel values must be numbers 0-255; row 0, column 3 is 'x'"
    ):
        request_pixels([[0, 0, 0, "x"]], 4)
    with pytest.raises(DataError, match="request: each image needs 4 pixel values; row 1 has 3"):
        request_pixels([[0, 0, 0, 0], [0, 0, 0]], 4)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_labels_from_one_pass_equal_the_models_own_predict(n_classes: int) -> None:
    """Forest and MLP labels are taken from predict_proba alone; they must be exactly what predict says."""
    from sklearn.neural_network import MLPClassifier

    pixels = IMAGES.reshape(30, -1)
    labels = LABELS % n_classes
    featurizer = fit_featurizer(pixels, FeatureSettings(), seed=0)
    for classifier in (
        RandomForestClassifier(n_estimators=3, random_state=0),  # few trees: ties between classes
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0),
    ):
        fitted = full_model(featurizer, classifier.fit(featurizer.transform(pixels), labels))
        assert labels_are_most_probable(fitted)
        noisy = np.random.default_rng(1).integers(0, 256, size=(500, 16))
        assert np.array_equal(predict_frame(fitted, noisy)["label"], fitted.predict(pixel_frame(noisy)))
    assert not labels_are_most_probable(model(SGDClassifier(loss="log_loss", random_state=0)))


def test_a_classifier_that_says_so_is_asked_once() -> None:
    class MostProbable:
        label_is_most_probable = True
        classes_ = np.array([3, 7])
        n_features_in_ = 2

        def predict_proba(self, frame):
            return np.array([[0.2, 0.8], [0.5, 0.5]])

        def predict(self, frame):
            raise AssertionError("predict_frame ran the model twice")

    frame = predict_frame(MostProbable(), np.zeros((2, 2)))
    assert frame["label"].tolist() == [7, 3]  # a tie goes to the first class, as numpy's argmax


def test_inputs_on_another_scale_than_0_255_are_warned_about() -> None:
    """The models answer anything in 0-255, so images scaled to [0, 1] or scikit-learn's 0-16 digits get
    confident, wrong labels (16% of the 0-16 digits right): the brightest pixel of the whole input tells."""
    assert "scaled to [0, 1] get meaningless predictions; multiply them by 255" in scale_warning(
        1.0, "in.csv"
    )
    assert scale_warning(0.0, "in.csv").startswith("in.csv: every pixel value is 1 or less")
    assert "load_digits() (0-16): the models take grey levels 0-255; multiply such images by 255/16" in (
        scale_warning(16.0, "in.csv")
    )
    assert scale_warning(16.5, "in.csv") is None and scale_warning(255.0, "in.csv") is None


def test_the_predict_stage_is_added_as_text_to_any_dvc_yaml(tmp_path) -> None:
    """`--as-stage` appends the stage, leaving every other byte; 4-space files, an empty `stages:`, a stage
    to replace before a commented one, paths with spaces; what it cannot edit safely it prints instead."""
    import yaml

    from mnist_lab.core.errors import MnistLabError
    from mnist_lab.serving.inference import add_predict_stage

    (tmp_path / "in box").mkdir()
    (tmp_path / "in box" / "images.csv").write_text("1,2\n")
    dvc_yaml = tmp_path / "dvc.yaml"
    four = "stages:\n    # the first\n    prepare:\n        cmd: echo a\n"
    dvc_yaml.write_text(four)
    command, replaced = add_predict_stage(
        tmp_path, tmp_path / "in box" / "images.csv", tmp_path / "out" / "p 1.csv"
    )
    assert (
        replaced is None and command == "python -m mnist_lab.cli predict 'in box/images.csv' -o 'out/p 1.csv'"
    )
    text = dvc_yaml.read_text()
    assert text.startswith(four) and yaml.safe_load(text)["stages"]["predict"]["cmd"] == command
    # a stage after it, with its comment: replacing predict keeps both
    dvc_yaml.write_text(text + "    # the last\n    report:\n        cmd: echo b\n")
    _, replaced = add_predict_stage(tmp_path, tmp_path / "in box" / "images.csv", tmp_path / "q.csv")
    assert replaced == command
    after = dvc_yaml.read_text()
    assert after.startswith(four + "    # the last\n    report:\n        cmd: echo b\n    predict:")
    assert list(yaml.safe_load(after)["stages"]) == ["prepare", "report", "predict"]
    dvc_yaml.write_text("stages:\n")
    command, _ = add_predict_stage(
        tmp_path, tmp_path / "in box" / "images.csv", tmp_path / "q.csv", ["id", "my file"]
    )
    assert command.endswith(" -o q.csv --keep id --keep 'my file'")  # the stage keeps what the command did
    assert list(yaml.safe_load(dvc_yaml.read_text())["stages"]) == ["predict"]
    for content, why in (
        ("stages:\n  a: [\n", r"not YAML DVC can read \(while parsing a flow node\)"),
        ("", "`stages:` is not its last section"),
        ("stages:\n  a: {cmd: x}\nplots:\n  - p.csv\n", "`stages:` is not its last section"),
    ):
        dvc_yaml.write_text(content)
        with pytest.raises(MnistLabError, match=f"{why}; add the stage by hand:\n") as refused:
            add_predict_stage(tmp_path, tmp_path / "in box" / "images.csv", tmp_path / "q.csv")
        assert "cmd: python -m mnist_lab.cli predict 'in box/images.csv' -o q.csv" in str(refused.value)
        assert dvc_yaml.read_text() == content


def test_a_model_failing_on_a_valid_request_is_the_servers_fault_not_the_clients(capsys) -> None:
    """MLflow's server answers any exception from predict with a 400 telling the client to check its input;
    a model that fails on a valid request (the CNN predicting from two threads at once did) is a 500."""
    from mlflow.exceptions import MlflowException

    from mnist_lab.serving.pyfunc import DigitClassifier

    class Failing:
        n_features_in_ = 16
        classes_ = np.arange(10)

        def predict_proba(self, pixels):
            raise RuntimeError("INVALID_ARGUMENT: Buffer has been deleted or donated.\nmore detail")

        predict = predict_proba

    served = DigitClassifier(Failing(), 16)
    with pytest.raises(MlflowException) as failed:
        served.predict(None, IMAGES.reshape(30, -1)[:2].tolist())
    assert failed.value.get_http_status_code() == 500
    assert str(failed.value.message) == (
        "the model failed on a valid request (RuntimeError: INVALID_ARGUMENT: Buffer has been deleted or "
        "donated.): a fault of the server, not of the request; its log has the traceback"
    )
    assert "RuntimeError: INVALID_ARGUMENT" in capsys.readouterr().err
    with pytest.raises(MlflowException) as refused:  # a bad request is still the client's
        served.predict(None, [[0, 0, 0]])
    assert refused.value.get_http_status_code() == 400

    class Checking(Failing):  # the model's own check of the request: the client's too
        def predict_proba(self, pixels):
            raise DataError("request: this model takes images of 784 pixels, not 16")

    with pytest.raises(MlflowException) as checked:
        DigitClassifier(Checking(), 16).predict(None, IMAGES.reshape(30, -1)[:2].tolist())
    assert checked.value.get_http_status_code() == 400 and "not 16" in checked.value.message


def test_the_workspace_model_is_saved_for_serving_without_mlflows_pickle_warning(tmp_path, capfd) -> None:
    """`serve --workspace` printed MLflow's "Passing a Python object as python_model causes it to be
    serialized using CloudPickle" at every start: the run logger quiets it, this path did not."""
    import logging

    from mnist_lab.serving.server import pyfunc_dir

    for name in ("mlflow.sklearn", "mlflow.pyfunc", "mlflow.models.model"):  # as a fresh process has them
        logging.getLogger(name).setLevel(logging.NOTSET)
    forest = model(RandomForestClassifier(n_estimators=3, random_state=0))
    (tmp_path / "dvc.yaml").touch()  # a repository: saved in its .mnist-lab/serve/, not the user's cache
    saved = pyfunc_dir(tmp_path, "forest", forest)
    assert (saved / "MLmodel").is_file() and saved.is_relative_to(tmp_path)
    captured = capfd.readouterr()
    assert "CloudPickle" not in captured.err + captured.out
