import numpy as np

from mnist_lab.core.data import Dataset, flatten_images
from mnist_lab.core.features import describe_featurizer, fit_featurizer, scale_pixels
from mnist_lab.core.settings import FeatureSettings


def test_scale_pixels_maps_0_255_to_unit_interval() -> None:
    scaled = scale_pixels(np.array([[0, 51, 255]], dtype=np.uint8))
    assert scaled.dtype == np.float32 and np.allclose(scaled, [[0.0, 0.2, 1.0]])


def test_without_pca_features_are_scaled_pixels(digits: Dataset) -> None:
    pixels = flatten_images(digits.train_images)
    featurizer = fit_featurizer(pixels, FeatureSettings(pca=False), seed=0)
    assert np.array_equal(featurizer.transform(pixels), scale_pixels(pixels))
    assert describe_featurizer(featurizer, 64) == {
        "n_pixels": 64,
        "pca": False,
        "n_components": 64,
        "explained_variance": 1.0,
    }


def test_pca_keeps_the_requested_variance_fitted_on_train_only(digits: Dataset) -> None:
    train = flatten_images(digits.train_images)
    test = flatten_images(digits.test_images)
    featurizer = fit_featurizer(train, FeatureSettings(pca=True, pca_variance=0.95), seed=0)
    summary = describe_featurizer(featurizer, 64)
    assert 0.95 <= summary["explained_variance"] < 0.97
    assert 10 < summary["n_components"] < 64
    # fitted on train only: refitting on train+test would move the components
    both = fit_featurizer(np.vstack([train, test]), FeatureSettings(pca=True, pca_variance=0.95), seed=0)
    assert not np.allclose(featurizer.named_steps["pca"].mean_, both.named_steps["pca"].mean_)
    assert featurizer.transform(test).shape == (360, summary["n_components"])


def test_pca_variance_one_keeps_every_component(digits: Dataset) -> None:
    train = flatten_images(digits.train_images)
    featurizer = fit_featurizer(train, FeatureSettings(pca=True, pca_variance=1.0), seed=0)
    assert featurizer.transform(train[:2]).shape == (2, 64)
