"""prepare: read and validate the IDX files; split train/test (stratified, seeded) if there is no test set."""

from __future__ import annotations

import numpy as np

from mnist_lab.core.data import flatten_images, with_test_set
from mnist_lab.datasets.folder import read_dataset
from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system.files import save_arrays


def prepare(context: StageContext) -> None:
    settings, args = context.settings, context.args
    dataset = read_dataset(args.data)
    with context.compute():
        dataset = with_test_set(dataset, settings.data.test_size, settings.seed)
    assert dataset.test_images is not None and dataset.test_labels is not None  # with_test_set's
    save_arrays(
        args.out,
        train_pixels=flatten_images(dataset.train_images),
        train_labels=dataset.train_labels,
        test_pixels=flatten_images(dataset.test_images),
        test_labels=dataset.test_labels,
        image_shape=np.asarray(dataset.image_shape),
    )


def parser():
    p = stage_parser(__doc__)
    p.add_argument("--data", required=True, help="folder with the MNIST-format IDX files")
    p.add_argument("--out", required=True, help="prepared arrays (.npz)")
    return p


if __name__ == "__main__":
    main_for("prepare", parser(), prepare)
