"""Pure data functions: the dataset container, the bundled default dataset, splitting and label views."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mnist_lab.core.errors import DataError, SettingsError

if TYPE_CHECKING:
    from mnist_lab.core.settings import ModelSettings

PIXEL_MAX = 255  # IDX images are grey levels 0-255, as in MNIST
DIGITS_SPLIT_SEED = 0  # fixed: the bundled dataset's bytes (and so data.dvc) must never change
DIGITS_TEST_SIZE = 0.2


@dataclass(frozen=True)
class Dataset:
    """Images (count, rows, cols) uint8 and labels (count,) uint8; the test set is optional."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def has_test_set(self) -> bool:
        return self.test_images is not None

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.train_images.shape[1], self.train_images.shape[2]


def split_stratified(
    images: np.ndarray, labels: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split keeping each class's share: (train_images, train_labels, test_images, test_labels)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 2))]
        raise DataError(f"cannot stratify: classes {rare} have a single example; add data or a test set")
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            images, labels, test_size=test_size, random_state=seed, stratify=labels
        )
    except ValueError as exc:
        raise DataError(f"cannot split {labels.size} examples with test_size={test_size}: {exc}") from None
    return x_train, y_train, x_test, y_test


def with_test_set(dataset: Dataset, test_size: float, seed: int) -> Dataset:
    """The dataset itself if it has a test set; otherwise a stratified, seeded split of its training set."""
    if dataset.has_test_set:
        return dataset
    x_train, y_train, x_test, y_test = split_stratified(
        dataset.train_images, dataset.train_labels, test_size, seed
    )
    return Dataset(x_train, y_train, x_test, y_test)


def flatten_images(images: np.ndarray) -> np.ndarray:
    """(count, rows, cols) -> (count, rows*cols), keeping the dtype."""
    return images.reshape(images.shape[0], -1)


def task_labels(labels: np.ndarray, kind: str, positive_class: int) -> np.ndarray:
    """Labels for the task: the digit (multiclass) or 1 for `positive_class`, 0 otherwise (binary)."""
    if kind == "binary":
        return (labels == positive_class).astype(np.int64)
    return labels.astype(np.int64)


def check_detector_labels(labels: np.ndarray, positive_class: int, which: str) -> None:
    """Binary task labels (`task_labels`) of the `which` set ("training", "test") must hold both the
    positive class and the rest; a DataError naming `task.positive_class` otherwise."""
    if np.unique(labels).size < 2:
        missing = "no example of" if not labels.any() else "only examples of"
        raise DataError(
            f"task.positive_class {positive_class}: the {which} set holds {missing} digit {positive_class}, "
            "so the detector cannot be trained or scored on it; choose another task.positive_class, or add "
            "data"
        )


def digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download) as 0-255 grey levels,
    split 80/20 stratified with a fixed seed, in MNIST's layout."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (PIXEL_MAX / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.uint8)
    x_train, y_train, x_test, y_test = split_stratified(images, labels, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    return Dataset(x_train, y_train, x_test, y_test)


def check_training_labels(settings: ModelSettings, labels: np.ndarray, where: str) -> None:
    """A DataError (or SettingsError) naming what cannot work, before any training: fewer than two
    classes; a class too small for the stratified validation split the MLP and the CNN hold out; a grid
    search with more folds (`search.cv`) than the smallest class has examples. `where` names the model's
    settings in messages (`models.mlp`)."""
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size < 2:
        raise DataError(
            f"{where}: the training set holds only class {classes.tolist()}: a classifier needs examples of "
            "at least two classes"
        )
    smallest = int(np.argmin(counts))
    rare, count = int(classes[smallest]), int(counts[smallest])
    if settings.search is not None and count < settings.search.cv:
        raise SettingsError(
            f"{where}.search.cv is {settings.search.cv}, but class {rare} has only {count} training "
            f"example(s): each of the {settings.search.cv} stratified folds needs one of every class. Set "
            f"{where}.search.cv to {max(count, 2)} or fewer, or add data"
        )
    held_out = getattr(settings, "validation_fraction", None)
    if held_out is not None and count < 2:
        raise DataError(
            f"{where}: class {rare} has a single training example, but this model holds out a stratified "
            f"{held_out:g} of the training set for validation, which needs two of every class; add data"
        )
    if held_out is not None:
        examples = labels.size  # a grid search's fits train on its folds: (cv - 1) / cv of the examples
        if settings.search is not None:
            examples = examples * (settings.search.cv - 1) // settings.search.cv
        validation = math.ceil(held_out * examples)  # as scikit-learn's train_test_split rounds it
        if min(validation, examples - validation) < classes.size:
            least = math.ceil(classes.size / examples * 1000) / 1000
            fix = (
                f"set it between {least:g} and {1 - least:g}"
                if least < 0.5
                else "add data (no fraction works)"
            )
            raise SettingsError(
                f"{where}.validation_fraction is {held_out:g}: {validation} of {examples} training examples "
                f"held out, but a stratified split needs one of each of the {classes.size} classes on both "
                f"sides; {fix}"
            )
