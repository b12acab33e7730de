"""featurize: pixel scaling and optional PCA keeping `features.pca_variance`, fitted on the training set."""

from __future__ import annotations

from mnist_lab.core.features import describe_featurizer, fit_featurizer
from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system.files import load_arrays, save_arrays, save_object, write_json

PREPARED = ("train_pixels", "train_labels", "test_pixels", "test_labels")


def featurize(context: StageContext) -> None:
    settings, args = context.settings, context.args
    prepared = load_arrays(args.prepared, PREPARED)
    with context.compute():
        featurizer = fit_featurizer(prepared["train_pixels"], settings.features, settings.seed)
        train_features = featurizer.transform(prepared["train_pixels"])
        test_features = featurizer.transform(prepared["test_pixels"])
    save_object(args.featurizer, featurizer)
    save_arrays(args.features, train_features=train_features, test_features=test_features)
    write_json(args.summary, describe_featurizer(featurizer, prepared["train_pixels"].shape[1]))


def parser():
    p = stage_parser(__doc__)
    p.add_argument("--prepared", required=True)
    p.add_argument("--features", required=True, help="transformed train/test features (.npz)")
    p.add_argument("--featurizer", required=True, help="the fitted featurizer (joblib)")
    p.add_argument("--summary", required=True, help="JSON: components kept and variance explained")
    return p


if __name__ == "__main__":
    main_for("featurize", parser(), featurize)
