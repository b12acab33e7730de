"""The Keras CNN: settings, the network built for any image size, epoch-by-epoch training with early
stopping, determinism, and the classifier that takes raw pixels (pickled as a deterministic .keras file)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mnist_lab.core.cnn import (
    COMPILE_CACHE_ENV,
    DETERMINISTIC_GPU_FLAG,
    EXACT_ENV,
    EXACT_GPU_ENV,
    EXACT_REDUCTIONS_FLAG,
    PREALLOCATE_ENV,
    KerasImageClassifier,
    build_network,
    compute_device,
    describe_network,
    import_keras,
    layer_sizes,
    repeatable_xla_flags,
    train_cnn,
    validation_split,
)
from mnist_lab.core.data import Dataset, flatten_images, task_labels
from mnist_lab.core.errors import SettingsError
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.models import SettingsClassifier, takes_images, train_classifier
from mnist_lab.core.results import HISTORY_METRICS
from mnist_lab.core.settings import CNNSettings, FeatureSettings, parse_settings
from mnist_lab.serving.inference import predict_frame

FAST = {"type": "cnn", "filters": [8, 16], "max_epochs": 8, "patience": 2, "batch_size": 64}


def cnn(**changes: object) -> CNNSettings:
    return CNNSettings.model_validate({**FAST, **changes})


def pixels_of(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        flatten_images(dataset.train_images),
        dataset.train_labels.astype(np.int64),
        flatten_images(dataset.test_images),
        dataset.test_labels.astype(np.int64),
    )


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest) -> tuple:
    """A small CNN trained on 400 digits (module-wide: a training costs seconds)."""
    from mnist_lab.core.data import digits_dataset

    digits = digits_dataset()
    x_train, y_train, x_test, y_test = pixels_of(
        Dataset(digits.train_images[:400], digits.train_labels[:400], digits.test_images, digits.test_labels)
    )
    settings = cnn(max_epochs=40, patience=3, learning_rate=0.01)  # stops early, at about epoch 19
    rows: list[tuple[int, dict]] = []
    result = train_cnn(settings, x_train, y_train, (8, 8), seed=3, on_epoch=lambda e, r: rows.append((e, r)))
    return settings, result, rows, (x_train, y_train, x_test, y_test)


def test_the_default_is_the_classic_small_convnet() -> None:
    settings = CNNSettings(type="cnn")
    assert (settings.filters, settings.kernel_size, settings.dense_units) == ([32, 64], 3, [])
    assert (settings.dropout, settings.optimizer, settings.batch_size) == (0.5, "adam", 128)
    assert settings.augmentation is None
    assert describe_network(settings, (28, 28), 10) == (
        "28x28 image -> conv 32 (3x3) + pool -> 14x14 -> conv 64 (3x3) + pool -> 7x7 -> dropout 0.5 "
        "-> softmax 10"
    )
    # augmentation is said, with the default of the part not given (shift alone still rotates 10 degrees)
    shifted = CNNSettings.model_validate({"type": "cnn", "augmentation": {"shift": 0.2}})
    assert describe_network(shifted, (8, 8), 10).startswith(
        "8x8 image -> augmented in training (shift 0.2, rotation 10 degrees) -> conv 32"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"filtres": [32]}, "unknown key 'models.net.filtres'"),
        ({"filters": "32"}, "models.net.filters"),
        ({"filters": []}, "models.net.filters"),
        ({"optimizer": "adagrad"}, "models.net.optimizer"),
        ({"dropout": 1.0}, "models.net.dropout"),
        ({"augmentation": {"shift": 0.1, "zoom": 2}}, "unknown key 'models.net.augmentation.zoom'"),
        ({"learning_rate": "fast"}, "models.net.learning_rate"),
    ],
)
def test_bad_cnn_settings_are_refused_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        parse_settings({"models": {"net": {"type": "cnn", **change}}})


@pytest.mark.parametrize(
    ("image", "sizes"),
    [((28, 28), [(14, 14), (7, 7)]), ((8, 8), [(4, 4), (2, 2)]), ((3, 5), [(1, 2), (1, 1)])],
)
def test_any_image_size_builds_without_changing_settings(image: tuple[int, int], sizes: list) -> None:
    settings = cnn()
    assert layer_sizes(settings, image) == sizes
    assert describe_network(cnn(filters=[8, 8, 8, 8]), (8, 8), 10).startswith(
        "8x8 image -> conv 8 (3x3) + pool -> 4x4 -> conv 8 (3x3) + pool -> 2x2 -> conv 8 (3x3) + pool -> 1x1 "
        "-> conv 8 (3x3) -> 1x1 -> dropout"
    )  # the last block has no pool: the map is already one pixel
    network = build_network(settings, image, n_classes=10, seed=0)
    assert network.input_shape == (None, image[0] * image[1])
    pixels = np.full((2, image[0] * image[1]), 255.0, dtype=np.float32)
    probabilities = network.predict(pixels, verbose=0)
    assert probabilities.shape == (2, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_training_reports_every_epoch_and_keeps_the_best(trained: tuple) -> None:
    settings, result, rows, (_, _, x_test, y_test) = trained
    history = result.history
    assert [e for e, _ in rows] == list(range(1, len(history) + 1))  # the callback saw every epoch, in order
    assert [r for _, r in rows] == history
    assert set(history[0]) == {"epoch", *HISTORY_METRICS, "learning_rate"}
    assert all(row["learning_rate"] == pytest.approx(settings.learning_rate) for row in history)
    losses = [row["val_loss"] for row in history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    if len(history) < settings.max_epochs:  # stopped early: exactly `patience` epochs after the best
        assert len(history) == result.best_epoch + settings.patience
    assert result.best_epoch < len(history) < settings.max_epochs  # this training does stop early
    accuracy = float(np.mean(result.classifier.predict(x_test) == y_test))
    assert accuracy > 0.85 > 3 * np.bincount(y_test).max() / y_test.size


def test_the_kept_weights_are_the_best_epochs_not_the_last(trained: tuple) -> None:
    """The returned network scores the best epoch's validation loss, not the last epoch's."""
    from sklearn.metrics import log_loss

    settings, result, _, (x_train, y_train, _, _) = trained
    _, (_, x_val, _, y_val) = validation_split(settings, x_train, y_train, seed=3)
    loss = log_loss(y_val, result.classifier.predict_proba(x_val), labels=result.classifier.classes_)
    best = result.history[result.best_epoch - 1]["val_loss"]
    last = result.history[-1]["val_loss"]
    assert best != last
    assert loss == pytest.approx(best, rel=1e-3)


def test_two_trainings_from_scratch_give_identical_weights_and_history(small_digits: Dataset) -> None:
    x_train, y_train, _, _ = pixels_of(small_digits)
    first = train_cnn(cnn(max_epochs=2), x_train, y_train, (8, 8), seed=11)
    second = train_cnn(cnn(max_epochs=2), x_train, y_train, (8, 8), seed=11)
    other = train_cnn(cnn(max_epochs=1), x_train, y_train, (8, 8), seed=12)
    weights = [w for w in first.classifier.network.get_weights()]
    assert all(
        np.array_equal(a, b) for a, b in zip(weights, second.classifier.network.get_weights(), strict=True)
    )
    assert first.history == second.history
    assert not np.array_equal(weights[0], other.classifier.network.get_weights()[0])  # the seed matters
    assert pickle.dumps(first.classifier) == pickle.dumps(second.classifier)  # the model file, byte for byte


def test_initial_weights_do_not_depend_on_other_draws_from_pythons_random() -> None:
    """Keras seeds an unseeded initializer from Python's global `random`, which other threads draw from too
    (a Dask worker's event loop does, while a search's fit builds its network): the network's own seed
    decides its initial weights alone."""
    import random

    from mnist_lab.core.cnn import import_keras

    keras = import_keras()

    def initial_weights(other_draws: int) -> list:
        keras.utils.set_random_seed(7)
        for _ in range(other_draws):
            random.random()
        return build_network(CNNSettings(type="cnn"), (8, 8), n_classes=10, seed=7).get_weights()

    alone, disturbed = initial_weights(0), initial_weights(3)
    assert all(np.array_equal(a, b) for a, b in zip(alone, disturbed, strict=True))


def test_augmentation_is_seeded_and_changes_training(small_digits: Dataset) -> None:
    x_train, y_train, _, _ = pixels_of(small_digits)
    augmented = cnn(max_epochs=1, augmentation={"shift": 0.1, "rotation_degrees": 10})
    first = train_cnn(augmented, x_train, y_train, (8, 8), seed=5)
    second = train_cnn(augmented, x_train, y_train, (8, 8), seed=5)
    plain = train_cnn(cnn(max_epochs=1), x_train, y_train, (8, 8), seed=5)
    assert first.history == second.history
    assert first.history != plain.history
    names = [layer.name for layer in first.classifier.network.layers]
    assert {"shift", "rotate"} <= set(names) and not {"shift", "rotate"} & {
        layer.name for layer in plain.classifier.network.layers
    }
    shift_only = build_network(cnn(augmentation={"shift": 0.1, "rotation_degrees": 0}), (8, 8), 10, 0)
    assert "shift" in [layer.name for layer in shift_only.layers]
    assert "rotate" not in [layer.name for layer in shift_only.layers]
    # the largest seed the settings take (2**32 - 1): the rotation's seed overflowed Keras's uint32
    largest = build_network(augmented, (8, 8), 10, 2**32 - 1)
    assert "rotate" in [layer.name for layer in largest.layers]


def test_the_five_detector(small_digits: Dataset) -> None:
    x_train, y_train, x_test, y_test = pixels_of(small_digits)
    binary_train, binary_test = task_labels(y_train, "binary", 5), task_labels(y_test, "binary", 5)
    result = train_cnn(cnn(max_epochs=20, learning_rate=0.01), x_train, binary_train, (8, 8), seed=0)
    assert list(result.classifier.classes_) == [0, 1]
    probabilities = result.classifier.predict_proba(x_test)
    assert probabilities.shape == (len(x_test), 2)
    assert float(np.mean(result.classifier.predict(x_test) == binary_test)) > 0.9


def test_the_classifier_takes_raw_pixels_and_pickles_whole(trained: tuple) -> None:
    _, result, _, (x_train, _, x_test, _) = trained
    classifier = result.classifier
    featurizer = fit_featurizer(x_train, FeatureSettings(pca=True, pca_variance=0.9), seed=0)
    model = full_model(featurizer, classifier)
    assert model is classifier  # never behind the featurizer (PCA would feed it components, not images)
    frame = predict_frame(model, x_test[:5].astype(np.float64))
    assert list(frame.columns) == ["label", *(f"probability_{d}" for d in range(10))]
    # any request size, answered in power-of-two batches: the same probabilities as one batch of all. On a
    # GPU only to ~1e-4: XLA picks its kernels there by the batch's shape (1.5e-4 apart on an H200)
    whole = classifier.predict_proba(x_test)
    tolerance = 1e-6 if compute_device() == "cpu" else 1e-3
    for size in (1, 3, 64, 200):
        assert np.allclose(classifier.predict_proba(x_test[:size]), whole[:size], atol=tolerance)
    restored = pickle.loads(pickle.dumps(classifier))
    assert isinstance(restored, KerasImageClassifier)
    assert np.array_equal(restored.predict_proba(x_test), classifier.predict_proba(x_test))
    with pytest.raises(ValueError, match="64 pixels"):
        classifier.predict(np.zeros((2, 63)))


def test_train_classifier_and_grid_search_route_to_the_cnn(small_digits: Dataset) -> None:
    x_train, y_train, x_test, _ = pixels_of(small_digits)
    settings = cnn(max_epochs=1, search={"grid": {"dropout": [0.25]}, "cv": 2})
    assert takes_images(settings)
    with pytest.raises(TypeError, match="image_shape"):
        train_classifier(settings.without_search(), x_train, y_train, seed=0)
    trained = train_classifier(settings, x_train, y_train, seed=0, image_shape=(8, 8))
    assert trained.search is not None and len(trained.search.candidates[0].fold_scores) == 2
    assert trained.classifier.network.get_layer("dropout").rate == 0.25  # the refit is the candidate
    assert len(trained.history) == 1 and trained.best_epoch == 1
    assert trained.classifier.predict(x_test).shape == (len(x_test),)
    assert SettingsClassifier(settings, 0, (8, 8)).get_params()["image_shape"] == (8, 8)


CORE_COUNT_SCRIPT = """
import hashlib, pickle, numpy as np
from mnist_lab.core.cnn import train_cnn
from mnist_lab.core.settings import CNNSettings
pixels = np.random.default_rng(0).integers(0, 256, size=(768, 784)).astype(np.uint8)
trained = train_cnn(CNNSettings(type="cnn", max_epochs=1), pixels, np.arange(768) % 10, (28, 28), seed=1)
print(hashlib.md5(pickle.dumps(trained.classifier)).hexdigest())  # the weights, and the model file's bytes
"""


@pytest.mark.skipif(not shutil.which("taskset") or (os.cpu_count() or 1) < 2, reason="needs taskset, 2 cores")
def test_cpu_training_does_not_depend_on_the_core_count() -> None:
    """The same training in two processes, one on one core and one on two, gives the same weights and the
    same model bytes (XLA's YNNPACK reductions, which split sums by thread count, are turned off for the
    CNN's processes; Keras's memory addresses are numbered out of the .keras file)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", EXACT_ENV, COMPILE_CACHE_ENV)}
    environ["JAX_PLATFORMS"] = "cpu"  # on a machine with a GPU too
    hashes = []
    for cores in ("0", "0,1"):
        done = subprocess.run(
            ["taskset", "-c", cores, sys.executable, "-c", CORE_COUNT_SCRIPT],
            capture_output=True, text=True, env=environ, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(done.stdout.split()[-1])
    assert hashes[0] == hashes[1]


SMALL_TRAINING_SCRIPT = """
import hashlib, pickle, numpy as np
from mnist_lab.core.cnn import train_cnn
from mnist_lab.core.settings import CNNSettings
pixels = np.random.default_rng(0).integers(0, 256, size=(200, 64)).astype(np.uint8)
trained = train_cnn(CNNSettings(type="cnn", max_epochs=1), pixels, np.arange(200) % 10, (8, 8), seed=1)
print(hashlib.md5(pickle.dumps(trained.classifier)).hexdigest())
"""


def test_compiled_programs_are_kept_and_reused_by_the_next_process_with_the_same_weights(tmp_path) -> None:
    cache = tmp_path / "xla"

    def weights(directory: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", SMALL_TRAINING_SCRIPT], capture_output=True, text=True, check=False,
            env={**os.environ, COMPILE_CACHE_ENV: directory},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1]

    first = weights(str(cache))
    kept = sorted(path.name for path in cache.iterdir())
    assert kept  # the training's programs, compiled once
    assert weights(str(cache)) == first
    assert sorted(path.name for path in cache.iterdir()) == kept  # the second process compiled nothing new
    assert weights("0") == first  # and without the cache: the same weights


def test_the_repeatability_flags_are_added_only_where_they_are_known_and_wanted() -> None:
    both = f"{EXACT_REDUCTIONS_FLAG} {DETERMINISTIC_GPU_FLAG}"
    assert repeatable_xla_flags({}, "0.10.2") == both
    assert (
        repeatable_xla_flags({"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, "0.10.2")
        == f"--xla_dump_to=/tmp/d {both}"
    )
    # opted out, each on its own: faster, core-count-dependent (CPU) or run-dependent (GPU) last bits
    assert repeatable_xla_flags({EXACT_ENV: "0"}, "0.10.2") == DETERMINISTIC_GPU_FLAG
    assert repeatable_xla_flags({EXACT_GPU_ENV: "0"}, "0.10.2") == EXACT_REDUCTIONS_FLAG
    assert repeatable_xla_flags({EXACT_ENV: "0", EXACT_GPU_ENV: "0"}, "0.10.2") is None
    # the user's own choice of either option is left alone
    own = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_gpu_deterministic_ops=false"
    assert repeatable_xla_flags({"XLA_FLAGS": own}, "0.10.2") is None
    # versions not checked: XLA aborts on a flag it does not know
    assert repeatable_xla_flags({}, "0.11.2") == DETERMINISTIC_GPU_FLAG  # checked on an H100
    assert repeatable_xla_flags({}, "0.12.0") is None
    assert repeatable_xla_flags({}, None) is None


def test_jax_takes_gpu_memory_as_needed_unless_the_user_says_otherwise(monkeypatch) -> None:
    """A second process on the same GPU (two server workers, two queued experiments) must not find 75% of
    its memory taken by the first: JAX's preallocation is off in every process that loads Keras."""
    monkeypatch.delenv(PREALLOCATE_ENV, raising=False)
    import_keras()
    assert os.environ[PREALLOCATE_ENV] == "false"
    monkeypatch.setenv(PREALLOCATE_ENV, "true")  # the user's own choice
    import_keras()
    assert os.environ[PREALLOCATE_ENV] == "true"


def test_the_deterministic_gpu_flag_leaves_cpu_training_as_it_was() -> None:
    """The GPU flag is accepted by this jaxlib (XLA aborts a process on a flag it does not know) and changes
    nothing on the CPU: the same training with and without it gives the same weights and model bytes."""
    hashes = []
    for opt_out in ("0", "1"):
        # the CPU's training, on a machine with a GPU too (there the children trained on the GPU)
        environ = {**os.environ, EXACT_GPU_ENV: opt_out, COMPILE_CACHE_ENV: "0", "JAX_PLATFORMS": "cpu"}
        environ.pop("XLA_FLAGS", None)
        done = subprocess.run(
            [sys.executable, "-c", SMALL_TRAINING_SCRIPT + FLAGS_LINE], capture_output=True, text=True,
            env=environ, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(done.stdout.splitlines()[-2:])  # the model's md5, then XLA_FLAGS (maybe empty)
    assert DETERMINISTIC_GPU_FLAG not in hashes[0][1] and DETERMINISTIC_GPU_FLAG in hashes[1][1]
    assert hashes[0][0] == hashes[1][0]


FLAGS_LINE = """
import os
print(os.environ.get("XLA_FLAGS", "").replace(" ", ","))
"""


def test_a_training_that_diverges_names_the_learning_rate() -> None:
    """A NaN loss never beats the best so far: no epoch was kept, and Keras's set_weights([]) failed with a
    traceback about weight lists. It stops at the first such epoch and says which setting to change."""
    from mnist_lab.core.data import digits_dataset
    from mnist_lab.core.errors import TrainingDiverged

    digits = digits_dataset()
    x_train, y_train = flatten_images(digits.train_images[:200]), digits.train_labels[:200].astype(np.int64)
    rows: list[int] = []
    with pytest.raises(TrainingDiverged) as diverged:
        train_cnn(cnn(optimizer="sgd", learning_rate=1e38, max_epochs=5), x_train, y_train, (8, 8), seed=0,
                  on_epoch=lambda epoch, _: rows.append(epoch))  # fmt: skip
    assert str(diverged.value) == (
        "training diverged at epoch 1: the loss is no longer a finite number, before any epoch could be "
        "kept; lower learning_rate (now 1e+38) or use another optimizer (now sgd)"
    )
    assert rows == [1]  # stopped there, not after max_epochs of NaN


def test_predictions_from_many_threads_at_once_are_those_of_one(trained: tuple) -> None:
    """A server answers requests in threads: Keras's JAX prediction is not safe to run twice at once on one
    model ("Buffer has been deleted or donated"), which the server answered as the client's fault (400)."""
    from concurrent.futures import ThreadPoolExecutor

    _, result, _, (_, _, x_test, _) = trained
    classifier = result.classifier
    batches = [x_test[i * 37 : i * 37 + 37 + i] for i in range(9)]  # several sizes: several compiled shapes
    expected = [classifier.predict_proba(batch) for batch in batches]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(4):
            answers = list(pool.map(classifier.predict_proba, batches * 4))
            for batch, answer in zip(batches * 4, answers, strict=True):
                assert np.array_equal(answer, expected[[b is batch for b in batches].index(True)])
