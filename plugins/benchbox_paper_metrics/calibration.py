"""The ``calibration`` evaluator: do the stored probabilities mean what they say?

- Brier score (multi-class: mean over images of the squared distance between the probability vector
  and the one-hot label; 0 best, 2 worst).
- Expected calibration error (ECE): top-label confidence in 15 equal-width bins, the bins' |accuracy -
  confidence| weighted by their share of the images (Guo et al. 2017).
- A reliability table per cell (report section) and a reliability diagram per data set (plot).

Both metrics are computed on the test folds pooled (as the other evaluators pool) and per fold
(``<metric>_folds``, ``_fold_mean``, ``_fold_std``). The formulas live in ``benchbox.results.pairstats``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchbox.contracts import Evaluator, MetricSpec, Section
from benchbox.results.pairstats import ECE_BINS, brier_score, expected_calibration_error, reliability_bins

CALIBRATION_METRICS = ("brier", "ece")


def _pooled(records) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.asarray(r.y_true, dtype=np.int64) for r in records])
    p = np.concatenate([np.asarray(r.probabilities, dtype=float) for r in records])
    return y, p


def _spread(values: list[float]) -> tuple[float, float]:
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    mean = float(finite.mean()) if finite.size else float("nan")
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return mean, std


class CalibrationMetrics(Evaluator):
    name = "calibration"
    description = f"Brier score and expected calibration error ({ECE_BINS} bins), reliability table and diagram"
    metrics = (
        MetricSpec("brier", "Brier", higher_is_better=False, digits=3, plot=True),
        MetricSpec("ece", "ECE", higher_is_better=False, digits=3, plot=True),
    )

    def __init__(self, n_bins: int = ECE_BINS):
        self.n_bins = n_bins

    def evaluate(self, records, classes, positive_class):
        for r in records:
            p = np.asarray(r.probabilities, dtype=float)
            if p.ndim != 2 or (len(classes) and p.shape[1] != len(classes)):
                raise ValueError(
                    f"fold {r.fold} of {r.cell} stores probabilities of shape {p.shape} for {len(classes)} classes; "
                    "calibration needs one probability per class and image"
                )
        y, p = _pooled(records)
        out = {
            "brier": brier_score(y, p),
            "ece": expected_calibration_error(y, p, self.n_bins),
            "reliability": reliability_bins(y, p, self.n_bins),
        }
        per_fold = {
            "brier": [brier_score(r.y_true, r.probabilities) for r in records],
            "ece": [expected_calibration_error(r.y_true, r.probabilities, self.n_bins) for r in records],
        }
        for key, values in per_fold.items():
            out[f"{key}_folds"] = [float(v) for v in values]
            out[f"{key}_fold_mean"], out[f"{key}_fold_std"] = _spread(values)
        return out

    def sections(self, result):
        out = []
        for _, r in result.summary.iterrows():
            bins = r.get("reliability")
            if not isinstance(bins, list):
                continue
            table = pd.DataFrame(
                [
                    {
                        "Confidence": f"({b['lower']:.2f}, {b['upper']:.2f}]",
                        "Images": int(b["count"]),
                        "Mean confidence": f"{b['confidence']:.3f}",
                        "Accuracy": f"{b['accuracy']:.3f}",
                        "Gap": f"{b['accuracy'] - b['confidence']:+.3f}",
                    }
                    for b in bins
                    if b["count"]
                ]
            )
            notes = [
                f"Brier {r['brier']:.3f}, ECE {r['ece']:.3f} (test folds pooled). Top-label confidence (the largest "
                f"probability) in {len(bins)} equal-width bins, empty bins left out; a negative gap is "
                "over-confidence."
            ]
            out.append(Section(f"Reliability: {r['data']} x {r['backbone']}", table, notes=notes))
        return out

    def plots(self, result, directory: Path):
        from benchbox.results.views.plots import pyplot, save

        rows = [r for _, r in result.summary.iterrows() if isinstance(r.get("reliability"), list)]
        written = []
        for data in dict.fromkeys(r["cell"].data for r in rows):
            mine = [r for r in rows if r["cell"].data == data]
            plt = pyplot()
            fig, ax = plt.subplots(figsize=(5, 4.5))
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
            for r in mine:
                bins = [b for b in r["reliability"] if b["count"]]
                ax.plot(
                    [b["confidence"] for b in bins],
                    [b["accuracy"] for b in bins],
                    marker="o",
                    label=f"{r['backbone']} (ECE {r['ece']:.3f}, Brier {r['brier']:.3f})",
                )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("mean top-label confidence of the bin")
            ax.set_ylabel("accuracy of the bin")
            ax.legend(fontsize=7, loc="upper left")
            ax.set_title(f"{result.manifest.get('suite', '')}: {data.label}, reliability", fontsize=9)
            fig.tight_layout()
            written.append(save(fig, directory / f"reliability__{data.slug}.png"))
        return written
