"""The fold-inspector hook (benchbox_fold_inspectors): a plugin acts on each scored fold with the fold's own
model and keeps a summary in the record and arrays beside it, with no core edit; its table is validated by
the inspector; an inspector that fails never fails a fold."""

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, FoldArtefacts, FoldInspector
from benchbox.define.suite import load_suite
from benchbox.errors import SuiteError
from benchbox.execute.runner import Reporter, run_suite
from benchbox.plugins import load_registry
from conftest import write_suite


class Means(Backbone):
    """Class means of the pixels; the model is the (classes, pixels) array."""

    name = "test/means"
    framework = "numpy"
    defaults = {"input_size": [32, 32]}
    seen_inspect: list = []

    def fit(self, job):
        Means.seen_inspect.append(job.inspect)
        x = job.x_train.reshape(len(job.x_train), -1) / 255.0
        return np.stack([x[job.y_train == c].mean(0) for c in range(job.num_classes)])

    def predict(self, model, images, ids=None):
        d = ((images.reshape(len(images), -1)[:, None] / 255.0 - model[None]) ** 2).mean(2)
        e = np.exp(-20 * (d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)


class Distance(FoldInspector):
    """Keeps, per test image, its distance to the predicted class's mean: it reads the model itself."""

    name = "distance"
    defaults = {"scale": 1.0}
    folder = "distances"

    def check_options(self, options):
        return [] if options.get("scale", 1.0) > 0 else ["scale: must be positive"]

    def inspect(self, fold, options):
        x = fold.job.x_test.reshape(len(fold.job.x_test), -1) / 255.0
        predicted = fold.probabilities.argmax(axis=1)
        d = options["scale"] * np.sqrt(((x - fold.model[predicted]) ** 2).mean(1))
        return FoldArtefacts(
            summary={
                "alias": fold.alias,
                "classes": list(fold.classes),
                "right": int((predicted == fold.y_test).sum()),
            },
            arrays={"distance": d.astype(np.float32), "ids": np.array(fold.job.test_ids)},
            warning="far" if d.max() > 10 else None,
        )


class Boom(FoldInspector):
    name = "boom"

    def inspect(self, fold, options):
        raise RuntimeError("kaput")


class Plugin:
    @hookimpl
    def benchbox_backbones(self):
        return [Means()]

    @hookimpl
    def benchbox_fold_inspectors(self):
        return [Distance(), Boom()]


class Collect(Reporter):
    def __init__(self):
        self.messages = []

    def message(self, text):
        self.messages.append(text)


def suite(tmp_path, tables: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_suite(
        tmp_path / "s.toml",
        f"""
        name = "inspected"
        output_dir = "{tmp_path / "runs"}"
        evaluators = ["paper"]
        [protocol]
        k = 2
        [datasets.syn]
        plugin = "synthetic"
        images = 12
        patients = 12
        [backbones.m]
        plugin = "test/means"
        {tables}
        """,
    )


def test_an_inspector_keeps_a_summary_in_each_record_and_arrays_beside_it(tmp_path):
    registry = load_registry(extra_plugins=[Plugin()])
    Means.seen_inspect.clear()
    result = run_suite(load_suite(suite(tmp_path, "[distance]\nscale = 2.0"), registry), registry, reporter=Collect())
    assert Means.seen_inspect == [None, None]  # the test labels the request holds never reach the backbone
    assert sorted(r.fold for r in result.records) == [0, 1]
    for record in result.records:
        kept = record.info["distance"]
        assert kept["alias"] == "m" and kept["classes"] == list(record.classes)
        assert kept["right"] == int((record.predicted == record.y_true).sum())
        assert kept["file"] == f"distances/syn__m__fold{record.fold:02d}.npz"
        with np.load(result.run_dir / kept["file"], allow_pickle=False) as arrays:
            assert [str(i).rsplit("/", 1)[-1] for i in arrays["ids"]] == record.test_ids  # the job's ids: data/id
            assert arrays["distance"].shape == (record.n_test,)
    assert "boom" not in result.records[0].info  # an inspector the suite does not name does not run


def test_a_failing_inspector_is_a_warning_and_the_fold_is_kept(tmp_path):
    registry = load_registry(extra_plugins=[Plugin()])
    plain = run_suite(load_suite(suite(tmp_path / "a", ""), registry), registry, reporter=Collect())
    reporter = Collect()
    result = run_suite(load_suite(suite(tmp_path / "b", "[boom]\n[distance]"), registry), registry, reporter=reporter)
    warnings = [m for m in reporter.messages if "kaput" in m]
    assert len(warnings) == 2 and warnings[0].startswith("warning: syn x m fold ")
    assert "fold inspector 'boom' failed on syn x m fold" in warnings[0] and "RuntimeError: kaput" in warnings[0]
    assert "Traceback" in (result.run_dir / "benchbox.log").read_text()
    by_fold = {r.fold: r for r in plain.records}
    for record in result.records:  # the same numbers as without the inspectors
        assert np.array_equal(record.probabilities, by_fold[record.fold].probabilities)
        assert record.info["boom"]["status"].startswith("fold inspector 'boom' failed")
        assert "file" in record.info["distance"]


@pytest.mark.parametrize(
    "tables,problem",
    [
        ("[distance]\nscale = -1.0", "distance.scale: must be positive"),
        ("[distance]\nscal = 2.0", "distance.scal: unknown key (did you mean scale?); allowed: scale"),
        ('[distance]\nscale = "big"', "distance.scale: must be a number, got 'big'"),
        ("distance = 3", "distance: must be a table of its options, e.g. [distance] alone for the defaults"),
        ("[distanse]", "distanse: unknown key (did you mean distance?)"),
    ],
)
def test_an_inspectors_table_is_validated_by_the_inspector(tmp_path, tables, problem):
    registry = load_registry(extra_plugins=[Plugin()])
    text = tables if tables.startswith("[") else None
    path = suite(tmp_path, tables) if text else write_suite(tmp_path / "t.toml", f"{tables}\n" + SUITE_BODY)
    with pytest.raises(SuiteError) as err:
        load_suite(path, registry)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


SUITE_BODY = 'name = "t"\n[datasets.syn]\nplugin = "synthetic"\n[backbones.m]\nplugin = "test/means"\n'
