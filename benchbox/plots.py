"""PNG plots of a run, from its stored records (matplotlib, no display needed):
a confusion-matrix heatmap per dataset x backbone, ROC curves of all backbones per dataset, and a
per-fold strip plot of the study's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchbox.metrics import HEADLINE, confusion_matrix, metrics_from_confusion
from benchbox.summary import group_records

LABELS = {"accuracy_3class": "3-class acc.", "accuracy_2class": "2-class acc.", "sensitivity": "sensitivity",
          "specificity": "specificity"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(run_dir, records, summary: pd.DataFrame, suite_name: str) -> list[Path]:
    plt = _plt()
    from sklearn.metrics import roc_curve

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    cells = group_records(records)
    meta = {(r["dataset"], r["backbone"]): r for _, r in summary.iterrows()}
    for (ds, bb), recs in cells.items():
        row = meta.get((ds, bb))
        if row is None:
            continue
        classes, cm = list(row["classes"]), np.asarray(row["confusion"]).T  # predicted rows, actual columns
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(classes), 1.2 + 1.1 * len(classes)))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("actual class")
        ax.set_ylabel("predicted class")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_title(f"{suite_name}: {ds} x {bb}\npooled confusion matrix", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"confusion__{ds}__{bb}.png", plt))

    for ds in sorted({d for d, _ in cells}):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for (d, bb), recs in cells.items():
            if d != ds or (d, bb) not in meta:
                continue
            row = meta[(d, bb)]
            pos = list(row["classes"]).index(row["positive_class"])
            y = np.concatenate([r["y_true"] for r in recs]) == pos
            score = np.concatenate([np.asarray(r["probabilities"])[:, pos] for r in recs])
            if y.min() == y.max():
                continue
            fpr, tpr, _ = roc_curve(y, score)
            auc = row.get("auc", np.nan)
            ax.plot(fpr, tpr, label=f"{bb} (AUC {auc:.3f})" if np.isfinite(auc) else bb)
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set_xlabel("1 − specificity (false positive rate)")
        ax.set_ylabel("sensitivity (true positive rate)")
        ax.set_title(f"{suite_name}: {ds}\nROC, positive class vs rest, pooled folds", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"roc__{ds}.png", plt))

        fig, axes = plt.subplots(1, len(HEADLINE), figsize=(3 * len(HEADLINE), 3.4), sharey=True)
        names = [bb for (d, bb) in cells if d == ds and (d, bb) in meta]
        for ax, key in zip(axes, HEADLINE):
            for x, bb in enumerate(names):
                row = meta[(ds, bb)]
                pos = list(row["classes"]).index(row["positive_class"])
                values = []
                for r in cells[(ds, bb)]:
                    pred = np.asarray(r["probabilities"]).argmax(1)
                    values.append(metrics_from_confusion(confusion_matrix(r["y_true"], pred, len(row["classes"])), pos)[key])
                ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, s=18)
                ax.hlines(row[key], x - 0.25, x + 0.25, color="black", lw=1)
            ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
            ax.set_title(LABELS[key], fontsize=9)
            ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("per-fold value (line: pooled)")
        fig.suptitle(f"{suite_name}: {ds}, per-fold metrics", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"folds__{ds}.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
