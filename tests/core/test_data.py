import numpy as np
import pytest

from mnist_lab.core.data import (
    Dataset,
    digits_dataset,
    flatten_images,
    split_stratified,
    task_labels,
    with_test_set,
)
from mnist_lab.core.errors import DataError
from tests.helpers import random_images


def test_digits_are_mnist_like_and_deterministic() -> None:
    first, second = digits_dataset(), digits_dataset()
    assert first.train_images.shape == (1437, 8, 8) and first.test_images.shape == (360, 8, 8)
    assert first.train_images.dtype == np.uint8 and first.train_images.max() == 255
    assert np.array_equal(first.train_images, second.train_images)
    assert np.array_equal(first.test_labels, second.test_labels)
    assert sorted(np.unique(first.test_labels)) == list(range(10))


def test_split_is_stratified_and_seeded() -> None:
    images, labels = random_images(500, 4, 4)
    x_train, _, x_test, y_test = split_stratified(images, labels, 0.2, seed=3)
    assert len(y_test) == 100 and np.array_equal(np.bincount(y_test), [10] * 10)
    again = split_stratified(images, labels, 0.2, seed=3)
    assert np.array_equal(again[3], y_test) and np.array_equal(again[0], x_train)
    other = split_stratified(images, labels, 0.2, seed=4)
    assert not np.array_equal(other[2], x_test)


def test_with_test_set_splits_only_when_needed(digits: Dataset) -> None:
    assert with_test_set(digits, 0.5, 0) is digits
    images, labels = random_images(100, 4, 4)
    split = with_test_set(Dataset(images, labels), 0.25, 0)
    assert split.has_test_set and split.test_images.shape == (25, 4, 4)


def test_split_explains_what_cannot_be_stratified() -> None:
    images, _ = random_images(19, 2, 2)
    labels = np.array([*np.repeat(np.arange(9), 2), 9], dtype=np.uint8)
    with pytest.raises(DataError, match=r"classes \[9\] have a single example"):
        split_stratified(images, labels, 0.5, 0)
    images, labels = random_images(20, 2, 2)
    with pytest.raises(DataError, match="cannot split 20 examples"):
        split_stratified(images, labels, 0.1, 0)


def test_task_labels() -> None:
    labels = np.array([5, 3, 5, 0], dtype=np.uint8)
    assert task_labels(labels, "binary", 5).tolist() == [1, 0, 1, 0]
    assert task_labels(labels, "multiclass", 5).tolist() == [5, 3, 5, 0]


def test_flatten_images_keeps_dtype() -> None:
    images, _ = random_images(3, 28, 28)
    flat = flatten_images(images)
    assert flat.shape == (3, 784) and flat.dtype == np.uint8


def test_a_detector_needs_both_classes() -> None:
    from mnist_lab.core.data import check_detector_labels

    check_detector_labels(np.array([0, 1, 0]), 5, "training")
    with pytest.raises(DataError, match="task.positive_class 5: the test set holds no example of digit 5"):
        check_detector_labels(np.zeros(4, dtype=int), 5, "test")
    with pytest.raises(DataError, match="the training set holds only examples of digit 3"):
        check_detector_labels(np.ones(4, dtype=int), 3, "training")
