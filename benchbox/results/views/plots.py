"""PNG plots of a run, from its RunResult (matplotlib, no display needed): ROC curves of every
backbone per data set (positive class against the rest), a per-fold strip plot of every metric an
evaluator declares with ``plot=True``, the cross-dataset AUC matrix of a cross-dataset run (a heat map
per backbone), and whatever plots the run's evaluators draw themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchbox.results.summary import RunResult
from benchbox.results.views.format import missing


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, close: bool = True) -> Path:
    """Write a figure atomically and close it (unless the caller draws it again: ``close=False``)."""
    plt = pyplot()
    tmp = path.with_suffix(".tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if close:
            plt.close(fig)
    tmp.replace(path)
    return path


def write_plots(result: RunResult) -> list[Path]:
    from benchbox.results.statistics import roc_points

    plt = pyplot()
    out_dir = Path(result.run_dir) / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    cells = result.cells
    rows = {r["cell"]: r for _, r in result.summary.iterrows()}
    name = result.manifest.get("suite", "")
    for data in dict.fromkeys(c.data for c in cells):
        try:
            mine = [c for c in cells if c.data == data and c in rows]
            fig, ax = plt.subplots(figsize=(5, 4.5))
            drawn = 0
            for cell in mine:
                row = rows[cell]
                classes = list(row["classes"])
                pos = classes.index(row["positive_class"])
                y = np.concatenate([r.y_true for r in cells[cell]]) == pos
                score = np.concatenate([r.probabilities[:, pos] for r in cells[cell]])
                if y.min() == y.max():
                    continue
                fpr, tpr = roc_points(y, score)
                auc = np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr)
                ax.plot(fpr, tpr, label=f"{cell.backbone} (AUC {auc:.3f})")
                drawn += 1
            if drawn:
                ax.plot([0, 1], [0, 1], ls=":", color="grey")
                ax.set_xlabel("1 − specificity (false positive rate)")
                ax.set_ylabel("sensitivity (true positive rate)")
                ax.set_title(
                    f"{name}: {data.label}\nROC, {rows[mine[0]]['positive_class']} vs rest, pooled folds", fontsize=9
                )
                ax.legend(fontsize=7, loc="lower right")
                fig.tight_layout()
                written.append(save(fig, out_dir / f"roc__{data.slug}.png"))
            else:
                plt.close(fig)

            specs = [m for m in result.metrics if m.plot]
            panels = [m for m in specs if any(isinstance(rows[c].get(f"{m.name}_folds"), list) for c in mine)]
            if not panels:
                continue
            fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels) + 0.5, 3.4), sharey=False, squeeze=False)
            for ax, spec in zip(axes[0], panels):
                for x, cell in enumerate(mine):
                    values = [spec.scale * v for v in rows[cell].get(f"{spec.name}_folds") or [] if not missing(v)]
                    ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, s=18)
                    pooled = rows[cell].get(spec.name)
                    if not missing(pooled):
                        ax.hlines(spec.scale * pooled, x - 0.25, x + 0.25, color="black", lw=1)
                ax.set_xticks(range(len(mine)), [c.backbone for c in mine], rotation=35, ha="right", fontsize=7)
                ax.set_title(f"{spec.label} {spec.unit}".strip(), fontsize=9)
            axes[0][0].set_ylabel("per-fold value (line: pooled)")
            fig.suptitle(f"{name}: {data.label}, per-fold metrics", fontsize=9)
            fig.tight_layout()
            written.append(save(fig, out_dir / f"folds__{data.slug}.png"))
        except Exception as exc:  # one data set's plots must not stop the others, nor the evaluators' plots
            plt.close("all")
            result.problems.append(f"plots of {data.label} were not drawn: {type(exc).__name__}: {exc}")

    if len(getattr(result, "cross", ())) and "auc" in result.cross.columns:  # the matrix of a strategy asking AUC
        try:
            written.append(cross_heatmap(result, out_dir))
        except Exception as exc:
            plt.close("all")
            result.problems.append(f"the cross-dataset heat map was not drawn: {type(exc).__name__}: {exc}")

    for ev_name, evaluator in result.evaluators.items():
        try:
            written += list(evaluator.plots(result, out_dir) or [])
        except Exception as exc:
            result.problems.append(f"evaluator {ev_name!r} failed to draw its plots: {type(exc).__name__}: {exc}")
    return written


def cross_heatmap(result: RunResult, out_dir: Path) -> Path:
    """cross_dataset__auc.png: one panel per backbone, rows trained on, columns tested on, AUC as
    colour (red below chance, yellow at 0.5, green towards 1) with the value and its 95% interval written in each cell; the diagonal (the
    within-data-set cross-validation) is outlined."""
    plt = pyplot()
    cross = result.cross
    backbones = list(dict.fromkeys(cross["backbone"]))
    names = list(dict.fromkeys(list(cross["trained_on"]) + list(cross["tested_on"])))
    trained = [n for n in names if n in set(cross["trained_on"])]
    side = 1.25
    fig, axes = plt.subplots(
        1,
        len(backbones),
        figsize=(1.6 + (side * len(names) + 0.9) * len(backbones) + 0.9, 1.9 + side * len(trained)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, backbone in zip(axes[0], backbones):
        mine = cross[cross["backbone"] == backbone]
        grid = np.full((len(trained), len(names)), np.nan)
        for _, r in mine.iterrows():
            grid[trained.index(r["trained_on"]), names.index(r["tested_on"])] = r["auc"]
        # chance (0.5) in the middle of a diverging scale: below it, the model ranks the classes the wrong
        # way round on that data set (often labels that mean different things at the two sites)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0.0, vmax=1.0)
        for _, r in mine.iterrows():
            i, j = trained.index(r["trained_on"]), names.index(r["tested_on"])
            text = "n/a" if missing(r["auc"]) else f"{r['auc']:.3f}"
            if not missing(r.get("auc_ci_low")) and not missing(r.get("auc_ci_high")):
                text += f"\n[{r['auc_ci_low']:.2f}–{r['auc_ci_high']:.2f}]"
            dark = not missing(r["auc"]) and abs(r["auc"] - 0.5) > 0.4
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            if r["trained_on"] == r["tested_on"]:
                ax.add_patch(
                    plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=1.5, ls="--", color="black")
                )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(trained)), trained, fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_title(backbone, fontsize=9)
    axes[0][0].set_ylabel("trained on")
    fig.suptitle(
        f"{result.manifest.get('suite', '')}: cross-dataset AUC, positive class vs rest\n"
        "(dashed outline: the data set's own cross-validation)",
        fontsize=9,
    )
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="AUC")
    return save(fig, out_dir / "cross_dataset__auc.png")
