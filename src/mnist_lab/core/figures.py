"""PNG figures (pure: arrays in, PNG bytes out) for MLflow artifacts and DVC image plots."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from mnist_lab.core.metrics import Curve


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure  # object API: no global pyplot state, no GUI backend

    return Figure(figsize=size)


def confusion_matrix_png(confusion: np.ndarray, labels: Sequence[int], title: str) -> bytes:
    figure = _figure((6, 5))
    axes = figure.add_subplot()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    threshold = confusion.max() / 2 if confusion.size else 0
    for (row, col), count in np.ndenumerate(confusion):
        axes.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    return _png(figure)


def curve_png(curve: Curve, xlabel: str, ylabel: str, title: str, diagonal: bool = False) -> bytes:
    figure = _figure((5, 5))
    axes = figure.add_subplot()
    axes.plot(curve.x, curve.y, linewidth=1.5)
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    return _png(figure)


def history_png(history: Sequence[dict[str, float]], title: str) -> bytes:
    figure = _figure((9, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for split in ("train", "val"):
        loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], label=split)
        accuracy_axes.plot(epochs, [row[f"{split}_accuracy"] for row in history], label=split)
    loss_axes.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    return _png(figure)
