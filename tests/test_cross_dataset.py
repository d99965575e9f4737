"""protocol.kind = "cross-dataset": every ordered pair (trained on A, tested on B) of a suite's data
sets, as cells + external predictions, a matrix per backbone (report table, heat map, leaderboard).

Fast tests use an in-process nearest-centroid backbone (no framework); one slow test runs the real
CLI on two exported synthetic folders with a tiny torch network."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, SplitStrategy
from benchbox.define.suite import load_suite
from benchbox.errors import BenchboxError, SuiteError
from benchbox.execute.records import CellKey
from benchbox.execute.runner import rerender, run_suite
from benchbox.execute.store import RunStore
from benchbox.plugins import load_registry
from benchbox.results.statistics import positive_auc
from benchbox.results.views.leaderboard import choose_metric, collect, rank, render_markdown
from conftest import HAS_TORCH, run_cli, write_suite


class Centroid(Backbone):
    """Nearest class centroid on 8x8 thumbnails, softmax of negative distances: a real (weak)
    classifier that needs no framework. Counts its fits; raises KeyboardInterrupt on fit number
    ``interrupt_at`` (a run killed half-way)."""

    name = "fake/centroid"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none"}
    fits = 0
    interrupt_at = None

    @staticmethod
    def _thumb(images):
        x = np.asarray(images, dtype=float)
        n, h, w = x.shape
        return x[:, : h // 8 * 8, : w // 8 * 8].reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4)).reshape(n, -1)

    def fit(self, job):
        Centroid.fits += 1
        if Centroid.interrupt_at is not None and Centroid.fits == Centroid.interrupt_at:
            raise KeyboardInterrupt
        x = self._thumb(job.x_train)
        return np.stack([x[job.y_train == c].mean(axis=0) for c in range(job.num_classes)])

    def predict(self, model, images, ids=None):
        d = ((self._thumb(images)[:, None, :] - model[None]) ** 2).sum(-1)
        z = -(d - d.min(axis=1, keepdims=True)) / (d.std() + 1e-9)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


class Plugin:
    @hookimpl
    def benchbox_backbones(self):
        return [Centroid()]


SUITE = """
name = "cross"
seed = 1
output_dir = "{out}"
evaluators = ["paper"]
[protocol]
kind = "cross-dataset"
k = 3
grouped = true
{extra}
[training]
epochs = 1
batch_size = 8
[datasets.a]
plugin = "synthetic"
images = 36
patients = 12
[datasets.b]
plugin = "synthetic"
images = 48
patients = 18
signal = false
[backbones.c]
plugin = "fake/centroid"
"""


@pytest.fixture
def registry():
    return load_registry(extra_plugins=[Plugin()])


@pytest.fixture(autouse=True)
def reset():
    Centroid.fits, Centroid.interrupt_at = 0, None


def suite_at(tmp_path, registry, extra="", body=SUITE):
    return load_suite(write_suite(tmp_path / "s.toml", body.format(out=tmp_path / "runs", extra=extra)), registry)


def test_suite_expands_every_ordered_pair_into_cells_and_externals(tmp_path, registry):
    suite = suite_at(tmp_path, registry)
    assert suite.cells == [CellKey("a", "c"), CellKey("b", "c")]
    assert suite.external == {CellKey("a", "c"): ["b"], CellKey("b", "c"): ["a"]}
    assert suite.protocol.n_folds == 3 and not suite.protocol.refit
    assert suite.protocol.label == "cross-dataset, 3-fold (stratified+grouped) within"
    refit = suite_at(tmp_path, registry, extra="refit = true")
    assert refit.protocol.refit and "refit on all" in refit.protocol.label


def test_refit_without_cross_dataset_and_one_data_set_are_suite_errors(tmp_path, registry):
    with pytest.raises(SuiteError, match='protocol.refit: applies to kind = "cross-dataset" only'):
        suite_at(
            tmp_path, registry, body=SUITE.replace('kind = "cross-dataset"', 'kind = "kfold"'), extra="refit = true"
        )
    one = SUITE[: SUITE.index("[datasets.b]")] + '[backbones.c]\nplugin = "fake/centroid"\n'
    with pytest.raises(SuiteError, match="needs at least two"):
        suite_at(tmp_path, registry, body=one)


def _mean_external(records, alias, pos):
    probs = np.mean([r.external[alias].probabilities for r in records], axis=0)
    labels = np.asarray(records[0].external[alias].labels)
    return labels, probs, probs.argmax(1) == pos


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    """One k-fold cross-dataset run shared by the tests that only read it."""
    registry = load_registry(extra_plugins=[Plugin()])
    Centroid.fits = 0
    result = run_suite(suite_at(tmp_path_factory.mktemp("kfold"), registry), registry)
    return result, registry, Centroid.fits


def test_kfold_matrix_figures_table_heatmap_and_html(kfold_run):
    result, _, fits = kfold_run
    assert fits == 6  # 2 cells x 3 folds, nothing else
    a_recs = result.cells[CellKey("a", "c")]
    assert all(len(r.external["b"].ids) == 48 and r.external["b"].groups for r in a_recs)
    cross = result.cross.set_index(["trained_on", "tested_on"])
    assert sorted(cross.index) == [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]
    pos = a_recs[0].classes.index("covid")
    # diagonal: the pooled cross-validation of a, as the comparison table computes it
    y = np.concatenate([r.y_true for r in a_recs])
    p = np.concatenate([r.probabilities for r in a_recs])
    assert cross.loc[("a", "a"), "auc"] == pytest.approx(positive_auc(y, p, pos))
    row = result.summary.set_index("dataset").loc["a"]
    assert cross.loc[("a", "a"), "sensitivity"] == pytest.approx(row["sensitivity"])
    assert cross.loc[("a", "a"), "specificity"] == pytest.approx(row["specificity"])
    # off the diagonal: the fold models' mean probability, every image of b once
    labels, probs, called = _mean_external(a_recs, "b", pos)
    ab = cross.loc[("a", "b")]
    assert ab["images"] == 48 and ab["models"] == 3 and "mean of 3 fold models" in ab["how"]
    assert ab["auc"] == pytest.approx(positive_auc(np.where(labels == "covid", pos, -1), probs, pos))
    assert ab["sensitivity"] == pytest.approx(called[labels == "covid"].mean())
    assert ab["specificity"] == pytest.approx((~called[labels != "covid"]).mean())
    assert ab["auc_ci_low"] <= ab["auc"] <= ab["auc_ci_high"]
    single = [positive_auc(np.where(labels == "covid", pos, -1), r.external["b"].probabilities, pos) for r in a_recs]
    assert ab["auc_fold_std"] == pytest.approx(np.std(single, ddof=1))  # the spread of the single fold models
    # the views
    md = (result.run_dir / "report.md").read_text()
    assert "Cross-dataset matrix: c (rows: trained on; columns: tested on)" in md
    assert f"{ab['auc']:.3f} [" in md
    # the suite lists "paper" alone: the strategy's matrix asks "clinical" for AUC, and the report says so
    assert result.cross_evaluators == {"auc": "clinical", "sensitivity": "paper", "specificity": "paper"}
    assert "AUC: computed by evaluator 'clinical', which the suite does not list" in md
    assert "auc" not in result.summary.columns  # the comparison table keeps the suite's own evaluators
    assert "External evaluation" not in md  # the matrix is the external table of such a run
    png = result.run_dir / "plots" / "cross_dataset__auc.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "Cross-dataset matrix" in (result.run_dir / "report.html").read_text()
    assert (result.run_dir / "cross_dataset.csv").read_text().count("\n") == 5


def test_refit_run_interrupted_resumes_without_training_anything_twice(tmp_path, registry):
    suite = suite_at(tmp_path, registry, extra="refit = true")
    Centroid.interrupt_at = 6  # killed during the 6th of 8 trainings
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, registry)
    run_dir = next((tmp_path / "runs").iterdir())
    assert len(list((run_dir / "folds").glob("*.json"))) == 5
    Centroid.fits, Centroid.interrupt_at = 0, None
    result = run_suite(suite, registry)
    assert result.run_dir == run_dir and Centroid.fits == 3  # the 3 unfinished models only
    assert RunStore(run_dir).manifest()["status"] == "complete"
    # refit: one more model per cell, trained on all of its data set, whose external predictions make the matrix
    assert len(result.refit_records) == 2 and all(r.fold == 3 and r.refit for r in result.refit_records)
    assert result.summary["folds"].tolist() == [3, 3]  # the refit model is no cross-validation fold
    refit_a = next(r for r in result.refit_records if r.cell.dataset == "a")
    assert refit_a.n_train == 36
    cross = result.cross.set_index(["trained_on", "tested_on"])
    labels, probs, called = _mean_external([refit_a], "b", refit_a.classes.index("covid"))
    assert cross.loc[("a", "b"), "models"] == 1 and "refit" in cross.loc[("a", "b"), "how"]
    assert cross.loc[("a", "b"), "sensitivity"] == pytest.approx(called[labels == "covid"].mean())
    assert cross.loc[("a", "a"), "models"] == 3  # the diagonal stays the cross-validation


def export(tmp_path, name, seed, size="32x32"):
    out = tmp_path / name
    from benchbox.data.export import export_dataset

    syn = load_registry().get("dataset", "synthetic")
    samples = syn.samples({**syn.defaults, "images": 45, "patients": 15}, seed, None)
    export_dataset(samples, out, tuple(int(v) for v in size.split("x")))
    return out


FOLDERS = """
name = "folders"
output_dir = "{out}"
evaluators = ["paper"]
[protocol]
kind = "cross-dataset"
k = 2
[training]
epochs = 1
[datasets.site1]
plugin = "folder"
root = "{a}"
positive_class = "covid"
[datasets.site2]
plugin = "folder"
root = "{b}"
{b_options}
[backbones.c]
plugin = "fake/centroid"
"""


def test_test_set_lacking_the_positive_class_is_a_clear_error_before_training(tmp_path, registry):
    a, b = export(tmp_path, "a", 1), export(tmp_path, "b", 2)
    shutil.rmtree(b / "covid")
    body = FOLDERS.format(out=tmp_path / "runs", a=a, b=b, b_options="")
    suite = load_suite(write_suite(tmp_path / "f.toml", body), registry)
    with pytest.raises(BenchboxError) as err:
        run_suite(suite, registry)
    text = str(err.value)
    assert "trained on 'site1' (positive class 'covid'), tested on 'site2'" in text
    assert "no class 'covid' (its classes: normal, pneumonia)" in text and "label_map" in text
    assert Centroid.fits == 0 and not (tmp_path / "runs").exists()


def test_classes_are_matched_by_name_through_label_map_and_may_differ(tmp_path, registry):
    a, b = export(tmp_path, "a", 1), export(tmp_path, "b", 2)
    (b / "covid").rename(b / "COVID-19")
    shutil.rmtree(b / "pneumonia")  # b lacks one of a's classes: fine
    b_options = 'label_map = { "COVID-19" = "covid" }\npositive_class = "covid"'
    body = FOLDERS.format(out=tmp_path / "runs", a=a, b=b, b_options=b_options)
    result = run_suite(load_suite(write_suite(tmp_path / "f.toml", body), registry), registry)
    cross = result.cross.set_index(["trained_on", "tested_on"])
    n_covid, n_normal = (len(list((b / c).iterdir())) for c in ("COVID-19", "normal"))
    assert cross.loc[("site1", "site2"), "positives"] == n_covid
    assert cross.loc[("site1", "site2"), "images"] == n_covid + n_normal
    assert np.isfinite(cross.loc[("site2", "site1"), "auc"])  # b's model (2 classes) tested on a (3 classes)


def test_leaderboard_one_entry_per_backbone_and_ordered_pair(kfold_run):
    result, registry, _ = kfold_run
    entries, problems, metrics = collect([result.run_dir], registry)
    cross = entries[entries["crossed"].fillna(False).astype(bool)]
    assert sorted(cross["data"]) == ["a → b", "b → a"]
    assert cross["group"].nunique() == 2  # each pair ranked on its own
    within = entries[~entries["crossed"].fillna(False).astype(bool)]  # the diagonal: ranked with k-fold runs' entries
    assert set(within["protocol"]) == {"3-fold (stratified+grouped)"} and "cross" not in within["group"].iloc[0]
    ranked = rank(entries, choose_metric(metrics, "auc"))
    text = render_markdown(ranked, choose_metric(metrics, "auc"))
    assert "## cross-dataset: trained on a → tested on b " in text and f"{cross.iloc[0]['auc']:.3f}" in text
    assert " a: synthetic covid " in text and "; b: synthetic covid " in text  # class counts: a detail at the end
    default = rank(entries, choose_metric(metrics, None))  # accuracy: the pairs are left out, and it says so
    assert True not in set(default.get("crossed", []))
    assert "add --metric auc" in render_markdown(default, choose_metric(metrics, None))


class BalancedCross(SplitStrategy):
    """cross-dataset whose matrix shows balanced accuracy (clinical) and 3-class accuracy (paper)."""

    name = "cross-balanced"
    crosses_datasets = True
    defaults = {"k": 3, "stratified": True, "grouped": False}
    matrix_metrics = {"balanced_accuracy": "clinical", "accuracy_3class": "paper"}

    def n_folds(self, options):
        return options["k"]

    def assign(self, options, labels, groups, sources, seed):
        return np.arange(len(labels)) % options["k"]


def test_the_matrix_shows_what_its_strategy_asks_of_the_evaluators_it_names(tmp_path):
    class Strategies:
        @hookimpl
        def benchbox_split_strategies(self):
            return [BalancedCross()]

    registry = load_registry(extra_plugins=[Plugin(), Strategies()])
    body = SUITE.replace('kind = "cross-dataset"', 'kind = "cross-balanced"').replace("grouped = true", "")
    result = run_suite(suite_at(tmp_path, registry, body=body), registry)
    cross = result.cross.set_index(["trained_on", "tested_on"])
    assert [m.name for m in result.cross_metrics] == ["balanced_accuracy", "accuracy_3class"]
    assert "auc" not in cross.columns
    a_recs = result.cells[CellKey("a", "c")]
    clinical, paper = (registry.evaluators[n].obj for n in ("clinical", "paper"))
    own = clinical.evaluate(a_recs, a_recs[0].classes, "covid")
    assert cross.loc[("a", "a"), "balanced_accuracy"] == pytest.approx(own["balanced_accuracy"])
    # off the diagonal: the evaluator scored the fold models' mean probability, each image of b once
    pos = a_recs[0].classes.index("covid")
    labels, probs, _ = _mean_external(a_recs, "b", pos)
    called = np.array(a_recs[0].classes)[probs.argmax(1)]
    assert cross.loc[("a", "b"), "accuracy_3class"] == pytest.approx((called == labels).mean())
    each = [paper.evaluate([r], r.classes, "covid")["accuracy_3class"] for r in a_recs]
    assert cross.loc[("a", "a"), "accuracy_3class_fold_std"] == pytest.approx(np.std(each, ddof=1))
    md = (result.run_dir / "report.md").read_text()
    assert "| Balanced acc. % " in md and "| Acc 3-class % " in md and "AUC" not in md.split("Cross-dataset")[1]
    assert not (result.run_dir / "plots" / "cross_dataset__auc.png").exists()  # the AUC heat map needs AUC
    entries, _, metrics = collect([result.run_dir], registry)
    ranked = rank(entries, choose_metric(metrics, "balanced_accuracy"))
    assert ranked["crossed"].fillna(False).astype(bool).sum() == 2  # the pairs rank by what their matrix has
    by_sensitivity = rank(entries, choose_metric(metrics, "sensitivity"))
    assert by_sensitivity.attrs["cross_left_out"] == 2
    assert "ranked by balanced_accuracy, accuracy_3class only" in render_markdown(
        by_sensitivity, choose_metric(metrics, "sensitivity")
    )


def test_a_matrix_asking_an_evaluator_not_installed_is_refused_at_validate(tmp_path):
    class Nowhere(BalancedCross):
        name = "cross-nowhere"
        matrix_metrics = {"balanced_accuracy": "clinical", "auc": "nowhere"}

    class Strategies:
        @hookimpl
        def benchbox_split_strategies(self):
            return [Nowhere()]

    registry = load_registry(extra_plugins=[Plugin(), Strategies()])
    body = SUITE.replace('kind = "cross-dataset"', 'kind = "cross-nowhere"').replace("grouped = true", "")
    with pytest.raises(SuiteError) as err:
        suite_at(tmp_path, registry, body=body)
    assert "protocol.kind" in str(err.value) and "evaluator 'nowhere', which is not installed" in str(err.value)


def test_old_runs_still_render_without_a_matrix(tmp_path, registry):
    body = SUITE.replace('kind = "cross-dataset"', 'kind = "kfold"')
    result = run_suite(suite_at(tmp_path, registry, body=body), registry)
    manifest = RunStore(result.run_dir).manifest()
    manifest["protocol"].pop("refit", None)  # as benchbox before cross-dataset wrote it
    RunStore(result.run_dir).update_manifest(protocol=manifest["protocol"])
    again = rerender(result.run_dir, registry)
    assert again.cross.empty and not again.refit_records
    assert "Cross-dataset" not in (result.run_dir / "report.md").read_text()
    assert not (result.run_dir / "plots" / "cross_dataset__auc.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")
def test_cli_end_to_end_on_two_exported_folders(tmp_path):
    for name, seed in (("site1", 1), ("site2", 2)):
        out = run_cli(
            "data", "export", "synthetic", "--to", str(tmp_path / name), "--size", "32x32", "--seed", str(seed)
        )
        assert out.returncode == 0, out.stderr
        for folder in (tmp_path / name).iterdir():  # 8 images per class: the test stays within seconds
            for extra in sorted(folder.glob("*.png"))[8:] if folder.is_dir() else []:
                extra.unlink()
    suite = write_suite(
        tmp_path / "x.toml",
        f"""
        name = "xe2e"
        output_dir = "{tmp_path / "runs"}"
        evaluators = ["paper", "clinical"]
        [protocol]
        kind = "cross-dataset"
        k = 2
        [training]
        epochs = 1
        batch_size = 16
        [datasets.site1]
        plugin = "folder"
        root = "{tmp_path / "site1"}"
        positive_class = "covid"
        [datasets.site2]
        plugin = "folder"
        root = "{tmp_path / "site2"}"
        positive_class = "covid"
        [backbones.mnv2]
        plugin = "torch/mobilenet_v2"
        weights = "none"
        input_size = [32, 32]
        """,
    )
    out = run_cli("run", str(suite))
    assert out.returncode == 0, out.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    md = (run_dir / "report.md").read_text()
    assert "Cross-dataset matrix: mnv2" in md and "| site1 " in md and "Specificity %" in md
    assert (run_dir / "plots" / "cross_dataset__auc.png").stat().st_size > 1000
    lb = run_cli("leaderboard", str(run_dir), "--metric", "auc")
    assert lb.returncode == 0, lb.stderr
    # headed by the suite's aliases; what each alias holds stays in the heading as a detail
    assert "cross-dataset: trained on site1 → tested on site2" in lb.stdout, lb.stdout
    assert "cross-dataset: trained on site2 → tested on site1" in lb.stdout and "site1: folder" in lb.stdout


def test_external_predictions_keep_patients_and_read_records_without_them():
    from benchbox.execute.records import ExternalPrediction

    old = {"ids": ["x", "y"], "labels": ["covid", "normal"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]}
    assert ExternalPrediction.from_json(old).groups is None  # written before patients were kept
    new = ExternalPrediction.from_json({**old, "groups": ["p1", "p1"]})
    assert new.groups == ["p1", "p1"] and ExternalPrediction.from_json(new.to_json()).groups == ["p1", "p1"]
    assert "groups" not in ExternalPrediction.from_json(old).to_json()
