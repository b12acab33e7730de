"""The convolutional network (Keras 3): built from typed settings, trained epoch by epoch on images, and
wrapped as a classifier that takes raw 0-255 pixels, like the pipeline's other models.

Keras is imported only when a network is built or loaded (the other models never pay for it). Its backend
is JAX unless `KERAS_BACKEND` says otherwise; JAX trains on a GPU by itself when its CUDA build is
installed. A network pickles as the bytes of a `.keras` file written deterministically (no save date, fixed
zip times), so the same training gives the same model file byte for byte."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_lab.core.errors import TrainingDiverged
from mnist_lab.core.settings import CNNSettings

DEFAULT_BACKEND = "jax"
PREDICT_BATCH = 512
POOL_SIZE = 2
# (epoch from 1, that epoch's metrics) after every epoch: the same hook the MLP reports through
EpochCallback = Callable[[int, dict[str, float]], None]


# XLA's CPU backend sums reductions (a bias gradient, a softmax) with YNNPACK, whose result depends on how
# many threads it gets, i.e. on the machine's core count: the same training gave other weights on 1 and 2
# cores. Without YNNPACK's reductions (XLA's own; convolutions and matrix products stay with YNNPACK),
# training is bit-identical on any core count, for somewhat more time per epoch (README, Performance).
# Checked with jaxlib 0.10.2; XLA aborts the process on a flag it does not know, so other versions are left
# as they are.
EXACT_REDUCTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
EXACT_JAXLIB = ("0.10.",)
EXACT_ENV = "MNIST_LAB_EXACT_CPU"  # "0": keep XLA's default (faster, results depend on the core count)
# On a GPU, XLA's default kernels (convolution algorithms picked by timing, atomic adds) are not repeatable:
# two trainings from the same seed on an H100 (jaxlib 0.11.2) gave other weights (largest difference 0.07
# after 4 epochs of MNIST size); with XLA's deterministic ops they were bit-identical, for ~9% more time per
# epoch (bench/bench_cnn_gpu.py, README Performance). The flag is ignored by the CPU
# backend (the same weights with and without it) and known to jaxlib 0.10 (CPU) and 0.11 (GPU), the
# versions checked.
DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"
DETERMINISTIC_GPU_JAXLIB = ("0.10.", "0.11.")
EXACT_GPU_ENV = (
    "MNIST_LAB_EXACT_GPU"  # "0": keep XLA's default GPU kernels (runs may differ in the last bits)
)
# JAX takes 75% of a GPU's memory at its first operation in each process, so a second process on the same GPU
# (`serve --workers 2`, `dvc queue start -j 2`, the board beside a training) runs out of memory (JAX's "GPU
# memory allocation" page). The pipeline's networks need well under 1 GB: every process allocates what it
# uses instead. The user's own setting is kept; the CPU backend ignores it.
PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"
# XLA's compiled programs kept in this directory and reused by the next process that compiles the same
# program (JAX's persistent compilation cache: the same executable, so the same results). The train and
# evaluate stages set it (stages/common.py); unset or "0": every process compiles afresh. Loading a saved
# network alone compiles its weights' initializers (~1.5 s on 2 cores) before the saved weights replace them.
COMPILE_CACHE_ENV = "MNIST_LAB_JAX_CACHE"


def repeatable_xla_flags(environ: Mapping[str, str], jaxlib_version: str | None) -> str | None:
    """The XLA_FLAGS that make training repeatable (on the CPU: independent of the core count; on a GPU:
    deterministic kernels), or None to leave them as they are: each opted out, named by the user's own
    flags, or unknown to this jaxlib (XLA would abort on it)."""
    flags = environ.get("XLA_FLAGS", "")
    wanted = (
        (EXACT_ENV, "ynn_fusion_type", EXACT_JAXLIB, EXACT_REDUCTIONS_FLAG),
        (EXACT_GPU_ENV, "xla_gpu_deterministic_ops", DETERMINISTIC_GPU_JAXLIB, DETERMINISTIC_GPU_FLAG),
    )
    added = [
        flag
        for opt_out, option, versions, flag in wanted
        if environ.get(opt_out, "1") != "0"
        and option not in flags
        and jaxlib_version is not None
        and jaxlib_version.startswith(versions)
    ]
    return " ".join([flags, *added]).strip() if added else None


def import_keras() -> Any:
    """`keras`, on the JAX backend unless `KERAS_BACKEND` names another (set before the first import), with
    repeatable training on the CPU and a GPU (see repeatable_xla_flags; XLA reads its flags when JAX starts
    a backend), GPU memory taken as needed (PREALLOCATE_ENV) and, where COMPILE_CACHE_ENV names a
    directory, compiled programs kept there (before the first compilation too)."""
    os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)
    if os.environ["KERAS_BACKEND"] == "jax":
        from importlib import metadata

        os.environ.setdefault(PREALLOCATE_ENV, "false")

        try:
            version: str | None = metadata.version("jaxlib")
        except metadata.PackageNotFoundError:
            version = None
        flags = repeatable_xla_flags(os.environ, version)
        if flags is not None:
            os.environ["XLA_FLAGS"] = flags
    import keras

    cache = os.environ.get(COMPILE_CACHE_ENV, "")
    if os.environ["KERAS_BACKEND"] == "jax" and cache not in ("", "0"):
        import jax

        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # every program: most are small
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return keras


TRAINING_BACKENDS = ("jax", "torch", "tensorflow")  # Keras 3's backends that can train (numpy cannot fit)


def backend_problem(environ: Mapping[str, str]) -> str | None:
    """Why the CNN cannot train on the Keras backend `environ` names (KERAS_BACKEND, JAX by default), or
    None; found without importing it (the validate stage asks before any training)."""
    from importlib.util import find_spec

    backend = environ.get("KERAS_BACKEND", DEFAULT_BACKEND)
    if backend not in TRAINING_BACKENDS:
        return f"KERAS_BACKEND={backend!r}: the CNN trains with jax (the default), torch or tensorflow"
    if find_spec(backend) is None:
        return (
            f"KERAS_BACKEND={backend}, but {backend} is not installed in this environment: install it "
            "(README, The CNN) or unset KERAS_BACKEND for JAX"
        )
    return None


def backend_packages() -> tuple[str, ...]:
    """The packages a saved network needs at prediction time, for the logged model's pip requirements."""
    backend = os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND)
    extra = {"jax": ("jax", "jaxlib"), "tensorflow": ("tensorflow",), "torch": ("torch",)}
    return ("keras", "h5py", *extra.get(backend, ()))


def compute_device() -> str:
    """Where the backend runs: `cpu`, or `gpu: <name>` for an accelerator (recorded as an MLflow tag)."""
    keras = import_keras()
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"
    return keras.backend.backend()


def _pooled(size: int) -> int:
    return size // POOL_SIZE if size >= POOL_SIZE else size


def layer_sizes(settings: CNNSettings, image_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The feature map's size after each convolution block: "same" padding keeps it, the 2x2 max-pool halves
    it (and is left out along a side already a single pixel wide), so any image size works: 8x8 digits
    (8 -> 4 -> 2) as well as 28x28 MNIST (28 -> 14 -> 7)."""
    rows, cols = image_shape
    sizes = []
    for _ in settings.filters:
        rows, cols = _pooled(rows), _pooled(cols)
        sizes.append((rows, cols))
    return sizes


def describe_network(settings: CNNSettings, image_shape: tuple[int, int], n_classes: int) -> str:
    """One line: the architecture as built for this image size."""
    size = image_shape
    parts = [f"{size[0]}x{size[1]} image"]
    if settings.augmentation is not None:  # training only; each part's default applies when not given
        shift, degrees = settings.augmentation.shift, settings.augmentation.rotation_degrees
        parts.append(f"augmented in training (shift {shift:g}, rotation {degrees:g} degrees)")
    for filters, pooled in zip(settings.filters, layer_sizes(settings, image_shape), strict=True):
        pool = " + pool" if pooled != size else ""  # no pool where the map is already one pixel
        kernel = f"{settings.kernel_size}x{settings.kernel_size}"
        parts.append(f"conv {filters} ({kernel}){pool} -> {pooled[0]}x{pooled[1]}")
        size = pooled
    if settings.dropout:
        parts.append(f"dropout {settings.dropout:g}")
    parts.extend(f"dense {units}" for units in settings.dense_units)
    parts.append(f"softmax {n_classes}")
    return " -> ".join(parts)


def build_network(settings: CNNSettings, image_shape: tuple[int, int], n_classes: int, seed: int) -> Any:
    """The compiled Keras model: flat raw 0-255 pixels in (what the served model receives), scaled to
    [0, 1] and reshaped into an image inside the network, class probabilities out."""
    import random

    keras = import_keras()
    layers = keras.layers
    # Each layer's initial weights from its own seed, drawn from a generator of this call's: Keras draws an
    # unseeded initializer's seed from Python's global `random`, which other threads of the process may
    # draw from too (a Dask worker's event loop does: the first fits on fresh workers scored differently).
    # The seeds are those Keras drew after `set_random_seed(seed)`: the same networks as before.
    draws = random.Random(seed)

    def weights() -> Any:
        return keras.initializers.GlorotUniform(seed=draws.randint(1, int(1e9)))

    rows, cols = image_shape
    inputs = keras.Input(shape=(rows * cols,), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = layers.Reshape((rows, cols, 1), name="image")(x)
    augmentation = settings.augmentation
    if augmentation is not None and augmentation.shift > 0:
        shift = augmentation.shift
        x = layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed, name="shift")(x)
    if augmentation is not None and augmentation.rotation_degrees > 0:
        turn = augmentation.rotation_degrees / 360.0  # Keras takes a fraction of a full turn
        rotation_seed = (seed + 1) % 2**32  # Keras's seeds are uint32, as `seed` is (its largest: 0)
        x = layers.RandomRotation(turn, fill_mode="constant", seed=rotation_seed, name="rotate")(x)
    size = (rows, cols)
    for index, (filters, pooled) in enumerate(
        zip(settings.filters, layer_sizes(settings, image_shape), strict=True), start=1
    ):
        x = layers.Conv2D(
            filters,
            settings.kernel_size,
            padding="same",
            activation="relu",
            kernel_initializer=weights(),
            name=f"conv{index}",
        )(x)
        if pooled != size:
            pool = (size[0] // pooled[0], size[1] // pooled[1])
            x = layers.MaxPooling2D(pool, name=f"pool{index}")(x)
        size = pooled
    x = layers.Flatten(name="flatten")(x)
    if settings.dropout:
        x = layers.Dropout(settings.dropout, seed=seed, name="dropout")(x)
    for index, units in enumerate(settings.dense_units, start=1):
        x = layers.Dense(units, activation="relu", kernel_initializer=weights(), name=f"dense{index}")(x)
    outputs = layers.Dense(
        n_classes, activation="softmax", kernel_initializer=weights(), name="probabilities"
    )(x)
    network = keras.Model(inputs, outputs, name="cnn")
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    network.compile(
        # named: Keras numbers unnamed optimizers per process (adam, adam_1, ...), which would change the
        # saved file of an identical second training
        optimizer=optimizers[settings.optimizer](learning_rate=settings.learning_rate, name="optimizer"),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return network


@dataclass
class TrainedNetwork:
    classifier: KerasImageClassifier
    history: list[dict[str, float]]
    best_epoch: int


def train_cnn(
    settings: CNNSettings,
    pixels: np.ndarray,
    labels: np.ndarray,
    image_shape: tuple[int, int],
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> TrainedNetwork:
    """Train on flat 0-255 `pixels` (count, rows*cols) with a stratified, seeded validation split; after
    every epoch record train/validation loss and accuracy and the learning rate, keep the weights of the best
    validation-loss epoch and stop after `patience` epochs without improvement. Seeded: the same inputs give
    the same weights (on the CPU)."""
    keras = import_keras()
    if pixels.ndim != 2 or pixels.shape[1] != image_shape[0] * image_shape[1]:
        raise ValueError(
            f"pixels of shape {pixels.shape} are not flat {image_shape[0]}x{image_shape[1]} images"
        )
    keras.utils.set_random_seed(seed)
    classes, (x_fit, x_val, y_fit, y_val) = validation_split(settings, pixels, labels, seed)
    network = build_network(settings, image_shape, len(classes), seed)
    recorder = epoch_recorder(keras, settings.patience, on_epoch)
    network.fit(
        x_fit,
        y_fit,
        batch_size=settings.batch_size,
        epochs=settings.max_epochs,
        validation_data=(x_val, y_val),
        shuffle=True,
        verbose=0,
        callbacks=[recorder],
    )
    if not recorder.best_weights:  # every epoch's loss was NaN or infinite: nothing to keep
        raise TrainingDiverged(
            f"training diverged at epoch {recorder.diverged}: the loss is no longer a finite number, before "
            f"any epoch could be kept; lower learning_rate (now {settings.learning_rate:g}) or use another "
            f"optimizer (now {settings.optimizer})"
        )
    network.set_weights(recorder.best_weights)
    classifier = KerasImageClassifier(network, classes, image_shape)
    return TrainedNetwork(classifier, recorder.history, recorder.best_epoch)


def validation_split(
    settings: CNNSettings, pixels: np.ndarray, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(the classes, (x_fit, x_val, y_fit, y_val)): float32 pixels, targets as class indices, a stratified
    `validation_fraction` held out, seeded."""
    from sklearn.model_selection import train_test_split

    classes = np.unique(labels)
    targets = np.searchsorted(classes, labels)
    split = train_test_split(
        np.asarray(pixels, dtype=np.float32),
        targets,
        test_size=settings.validation_fraction,
        random_state=seed,
        stratify=targets,
    )
    return classes, tuple(split)


def epoch_recorder(keras: Any, patience: int, on_epoch: EpochCallback | None) -> Any:
    """A Keras callback: one history row per epoch (Keras's own names mapped to the pipeline's), the best
    validation-loss epoch's weights kept, training stopped `patience` epochs after it."""

    class EpochRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.best_loss = float("inf")
            self.best_epoch = 0
            self.best_weights: list[np.ndarray] = []
            self.diverged = 0  # the epoch whose loss was not finite

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            learning_rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            row = {
                "epoch": float(epoch + 1),
                "train_loss": float(logs["loss"]),
                "train_accuracy": float(logs["accuracy"]),
                "val_loss": float(logs["val_loss"]),
                "val_accuracy": float(logs["val_accuracy"]),
                "learning_rate": float(learning_rate),
            }
            self.history.append(row)
            if not (np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])):
                self.diverged = self.diverged or epoch + 1  # ran away: no later epoch will be better
                self.model.stop_training = True
            elif row["val_loss"] < self.best_loss:
                self.best_loss, self.best_epoch = row["val_loss"], epoch + 1
                self.best_weights = self.model.get_weights()
            elif epoch + 1 - self.best_epoch >= patience:
                self.model.stop_training = True
            if on_epoch is not None:
                on_epoch(epoch + 1, row)

    return EpochRecorder()


class KerasImageClassifier:
    """A trained network as the pipeline's classifiers look: `predict` / `predict_proba` on flat raw 0-255
    pixels (arrays or DataFrames), `classes_`, `n_features_in_`. It takes raw pixels itself (scaling is a
    layer of the network), so the logged model is this alone, never the featurizer (PCA) in front of it."""

    takes_raw_pixels = True
    label_is_most_probable = True  # `predict` is the argmax of `predict_proba`

    @property
    def runtime_packages(self) -> tuple[str, ...]:
        return backend_packages()

    def __init__(self, network: Any, classes: np.ndarray, image_shape: tuple[int, int]) -> None:
        import threading

        self.network = network
        # one prediction at a time: Keras's JAX prediction donates the model's state to each call, so two
        # at once (a server's request threads) fail with "Buffer has been deleted or donated"
        self._predicting = threading.Lock()
        self.classes_ = np.asarray(classes)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.n_features_in_ = self.image_shape[0] * self.image_shape[1]

    def predict_proba(self, pixels: Any) -> np.ndarray:
        """Class probabilities, in chunks of at most PREDICT_BATCH images, each padded to a power of two:
        the compiled prediction function is traced once per batch shape, so a server answering requests of
        every size compiles at most 10 shapes instead of one per size."""
        values = np.asarray(pixels, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"expected flat images of {self.n_features_in_} pixels, got shape {values.shape}"
            )
        chunks = []
        for start in range(0, len(values), PREDICT_BATCH):
            chunk = values[start : start + PREDICT_BATCH]
            padded = np.zeros((1 << (len(chunk) - 1).bit_length(), values.shape[1]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            with self._predicting:
                chunks.append(np.asarray(self.network.predict_on_batch(padded))[: len(chunk)])
        if not chunks:
            return np.zeros((0, len(self.classes_)))
        return np.concatenate(chunks).astype(np.float64)

    def predict(self, pixels: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(pixels), axis=1)]

    def __getstate__(self) -> dict[str, Any]:
        return {
            "keras_file": keras_file_bytes(self.network),
            "classes": self.classes_,
            "image_shape": self.image_shape,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        keras_model = load_keras_bytes(state["keras_file"])
        type(self).__init__(self, keras_model, state["classes"], state["image_shape"])


KERAS_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def keras_file_bytes(network: Any) -> bytes:
    """The network as a `.keras` file's bytes, the same for the same weights in any process: Keras stamps the
    save date into `metadata.json` and the zip entries, and memory addresses into `config.json`'s shared
    object ids; the first two are taken out, the ids numbered."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mnist-lab-keras-") as folder:
        path = os.path.join(folder, "model.keras")
        network.save(path)
        with zipfile.ZipFile(path) as source:
            entries = [(info, source.read(info)) for info in source.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info, content in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(content)
                metadata.pop("date_saved", None)
                content = json.dumps(metadata, sort_keys=True).encode("utf-8")
            elif info.filename == "config.json":
                content = json.dumps(_numbered_shared_objects(json.loads(content))).encode("utf-8")
            entry = zipfile.ZipInfo(info.filename, date_time=KERAS_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, content)
    return out.getvalue()


def _numbered_shared_objects(config: Any, numbers: dict[int, int] | None = None) -> Any:
    """`config` with each `shared_object_id` (Keras writes the object's memory address, other in every
    process) replaced by 1, 2, ... in order of first appearance: the same sharing, the same bytes."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, dict):
        return {
            key: numbers.setdefault(value, len(numbers) + 1)
            if key == "shared_object_id"
            else _numbered_shared_objects(value, numbers)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_numbered_shared_objects(item, numbers) for item in config]
    return config


def load_keras_bytes(content: bytes) -> Any:
    """A network from `keras_file_bytes` output (any Keras backend can load it)."""
    import tempfile

    keras = import_keras()
    with tempfile.TemporaryDirectory(prefix="mnist-lab-keras-") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(content)
        return keras.saving.load_model(path)
