"""MLflow tracking (plugins/benchbox_mlflow) against a local sqlite store, read back with
MlflowClient: the structure of a tracked run, a run killed after two folds and rerun, `benchbox
export mlflow` of a run made before, idempotence, and a tracker that cannot be reached.

The runs use an instant fake backbone through the real runner (load_registry + run_suite); one test
goes through the real `benchbox` command. Skipped without MLflow (pip install 'benchbox[mlflow]')."""

import shutil

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone
from benchbox.define.suite import load_suite
from benchbox.errors import PluginError
from benchbox.execute.runner import run_suite
from benchbox.execute.store import RunStore
from benchbox.plugins import load_registry
from conftest import run_cli, write_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _needs_mlflow():
    """Skip without MLflow; imported here, not at collection (importing it takes seconds)."""
    pytest.importorskip("mlflow", reason="MLflow not installed (pip install 'benchbox[mlflow]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from test runs
        yield


def client_of(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class Instant(Backbone):
    """Seeded random probabilities, no training: a fold takes milliseconds. Raises
    KeyboardInterrupt (a Ctrl-C, as a kill) on the fit call number ``interrupt_at``."""

    name = "fake/instant"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none", "temperature": 1.0}
    calls = 0
    interrupt_at = None

    def fit(self, job):
        Instant.calls += 1
        if Instant.interrupt_at is not None and Instant.calls >= Instant.interrupt_at:
            raise KeyboardInterrupt
        return job.seed, job.num_classes

    def predict(self, model, images, ids=None):
        seed, k = model
        logits = np.random.default_rng(seed).normal(size=(len(images), k)) + images.mean(axis=(1, 2))[:, None] / 255
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def info(self, model):
        return {"params_total": 7, "params_trainable": 7, "params_frozen": 0}


class Fake:
    @hookimpl
    def benchbox_backbones(self):
        return [Instant()]


SUITE = """
name = "{name}"
seed = 5
output_dir = "{out}"
{tracking}
[protocol]
k = 3
grouped = true
[training]
epochs = 1
[datasets.syn]
plugin = "synthetic"
images = 30
patients = 12
[backbones.a]
plugin = "fake/instant"
[backbones.b]
plugin = "fake/instant"
temperature = 2.0
"""


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An initialised sqlite store, made once (its schema migrations take seconds) and copied."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client_of(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def db(tmp_path, empty_store, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artefact root (./mlruns) stays in the test's folder
    Instant.calls, Instant.interrupt_at = 0, None
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def registry():
    return load_registry(extra_plugins=[Fake()])


def make_suite(tmp_path, registry, uri=None, name="mlt", experiment=None):
    tracking = ""
    if uri:
        extra = f', experiment = "{experiment}"' if experiment else ""
        tracking = f'[tracking]\nmlflow = {{ uri = "{uri}", artifact_location = "{tmp_path / "artefacts"}"{extra} }}'
    path = write_suite(tmp_path / f"{name}.toml", SUITE.format(name=name, out=tmp_path / "runs", tracking=tracking))
    return load_suite(path, registry)


def structure(uri, experiment):
    """What the store holds for an experiment: parents, and per child its params, tags, status and
    every logged step of every metric (a duplicate shows as a repeated step)."""
    client = client_of(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            metrics = {
                k: sorted(m.step for m in client.get_metric_history(r.info.run_id, k)) for k in sorted(r.data.metrics)
            }
            children[r.info.run_name] = {
                "parent": r.data.tags["mlflow.parentRunId"],
                "metrics": metrics,
                "params": dict(r.data.params),
                "tags": dict(r.data.tags),
                "status": r.info.status,
            }
    return client, parents, children


def shape(children):
    """The comparable part of the children: names, metric keys with their steps, params, status."""
    return {
        name: (c["metrics"], c["params"], c["status"], c["tags"]["benchbox.cell_slug"]) for name, c in children.items()
    }


def test_a_tracked_run_is_one_parent_with_a_child_per_cell(tmp_path, db, registry):
    suite = make_suite(tmp_path, registry, uri=db)
    result = run_suite(suite, registry)
    client, parents, children = structure(db, "mlt")  # experiment defaults to the suite's name
    assert len(parents) == 1 and set(children) == {"syn x a", "syn x b"}
    parent = parents[0]
    assert all(c["parent"] == parent.info.run_id for c in children.values())
    assert parent.info.status == "FINISHED" and all(c["status"] == "FINISHED" for c in children.values())
    for c in children.values():
        # every fold's metrics once, at step = fold; generic ones and the evaluators' per-fold values
        for key in ("fold/accuracy", "fold/log_loss", "fold/train_seconds", "fold/infer_images_per_sec", "fold/n_test"):
            assert c["metrics"][key] == [0, 1, 2], key
        assert c["metrics"]["fold/accuracy_3class"] == [0, 1, 2]
        # every declared metric with its interval, at step = folds pooled
        for spec in result.metrics:
            assert c["metrics"][spec.name] == [3], spec.name
            if spec.interval != "none":
                assert c["metrics"][f"{spec.name}_ci_low"] == [3] and c["metrics"][f"{spec.name}_ci_high"] == [3]
        assert c["params"]["seed"] == "5" and c["params"]["protocol.k"] == "3" and c["params"]["training.epochs"] == "1"
        assert c["params"]["backbone.input_size"] == "[32, 32]" and c["params"]["dataset.images"] == "30"
        assert c["tags"]["benchbox.folds_done"] == "3/3"
    assert children["syn x b"]["params"]["backbone.temperature"] == "2.0"
    cell_a = next(c for c in result.cells if c.backbone == "a")
    row = result.summary[result.summary["cell"] == cell_a].iloc[0]
    logged = client.get_run(
        next(r for r in client.search_runs([parent.info.experiment_id]) if r.info.run_name == "syn x a").info.run_id
    )
    assert logged.data.metrics["accuracy_3class"] == pytest.approx(row["accuracy_3class"])
    tags, params = parent.data.tags, parent.data.params
    assert tags["benchbox.suite_digest"] == result.manifest["suite_digest"] == suite.digest
    assert tags["benchbox.run_dir"] == str(result.run_dir.resolve()) and tags["benchbox.version"]
    assert tags["env.cpu"] and tags["env.numpy"] and tags["env.gpus"] and tags["benchbox.status"] == "complete"
    assert params["seed"] == "5" and params["protocol"] == result.manifest["protocol_label"]
    files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "summary.csv", "manifest.json", "plots"} <= files
    assert any(f.path.endswith(".png") for f in client.list_artifacts(parent.info.run_id, "plots"))
    state = RunStore(result.run_dir).path / "mlflow.json"
    assert parent.info.run_id in state.read_text()
    assert "tracking" not in result.manifest  # where results are mirrored is not stored in the manifest


def test_killed_after_two_folds_and_rerun_logs_each_fold_once(tmp_path, db, registry):
    suite = make_suite(tmp_path, registry, uri=db)
    Instant.interrupt_at = 3  # the third fit: cell a has folds 0 and 1, cell b nothing
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, registry)
    _, parents, children = structure(db, "mlt")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    assert children["syn x a"]["metrics"]["fold/accuracy"] == [0, 1]
    assert "fold/accuracy" not in children["syn x b"]["metrics"]
    first = parents[0].info.run_id
    Instant.interrupt_at = None
    result = run_suite(suite, registry)  # resumes the unfinished run directory
    assert Instant.calls == 3 + 4  # two folds kept (the third call was interrupted), four trained now
    client, parents, children = structure(db, "mlt")
    assert [p.info.run_id for p in parents] == [first] and parents[0].info.status == "FINISHED"
    assert set(children) == {"syn x a", "syn x b"}
    for c in children.values():
        for key, steps in c["metrics"].items():
            assert steps == ([0, 1, 2] if key.startswith("fold/") else [3]), key
    # exporting the tracked run afterwards finds everything there already
    res = run_cli("export", "mlflow", result.run_dir, env={"MLFLOW_DISABLE_TELEMETRY": "true"})
    assert res.returncode == 0, res.stderr
    assert f"-> {db}" in res.stdout and "0 new metric value(s)" in res.stdout
    assert structure(db, "mlt")[2] == children


def test_export_of_an_older_run_gives_the_same_structure_and_is_idempotent(tmp_path, db, registry):
    from benchbox_mlflow import export_run

    run_suite(make_suite(tmp_path, registry, uri=db, name="mlt", experiment="live"), registry)
    older = run_suite(make_suite(tmp_path, registry, name="mlt"), registry, run_dir=tmp_path / "older", new=True)
    assert not (older.run_dir / "mlflow.json").exists()
    info = export_run(older.run_dir, registry, uri=db, experiment="exported")
    assert info["children"] == 2 and info["folds"] == 6 and info["logged"] > 0
    _, live_parents, live_children = structure(db, "live")
    _, parents, children = structure(db, "exported")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert shape(children) == shape(live_children)
    assert set(parents[0].data.params.items()) == set(live_parents[0].data.params.items())
    assert set(parents[0].data.tags) == set(live_parents[0].data.tags)
    # twice: nothing new, nothing duplicated, the same parent (found through mlflow.json)
    again = export_run(older.run_dir, registry)  # --uri and --experiment remembered in mlflow.json
    assert again["logged"] == 0 and again["parent_run_id"] == info["parent_run_id"]
    assert structure(db, "exported")[2] == children
    # without mlflow.json the parent is found by its tag, not duplicated
    (older.run_dir / "mlflow.json").unlink()
    third = export_run(older.run_dir, registry, uri=db, experiment="exported")
    assert third["logged"] == 0 and third["parent_run_id"] == info["parent_run_id"]
    assert len(structure(db, "exported")[1]) == 1


def test_an_unreachable_tracker_stops_before_training_and_a_later_failure_loses_nothing(
    tmp_path, db, registry, monkeypatch, capsys
):
    from benchbox_mlflow.mirror import Mirror

    down = make_suite(tmp_path, registry, uri="http://127.0.0.1:9", name="down")
    expected = r"mlflow: cannot reach the tracking server at http://127.*"
    with pytest.raises(PluginError, match=expected + "Nothing was trained in this session"):
        run_suite(down, registry)
    assert Instant.calls == 0  # nothing was trained
    # the server fails in the middle of the run: a warning, every fold stored, export completes it
    calls = []
    real_fold = Mirror.fold

    def flaky(self, record):
        calls.append(record.fold)
        if len(calls) == 2:
            raise ConnectionError("tracking server went away")
        return real_fold(self, record)

    monkeypatch.setattr(Mirror, "fold", flaky)
    result = run_suite(make_suite(tmp_path, registry, uri=db), registry)
    assert len(calls) == 2 and len(result.records) == 6
    err = capsys.readouterr().err
    assert "warning: mlflow: logging fold" in err and "went away" in err and "benchbox export mlflow" in err
    assert "tracking server went away" in (result.run_dir / "benchbox.log").read_text()
    monkeypatch.setattr(Mirror, "fold", real_fold)
    from benchbox_mlflow import export_run

    assert export_run(result.run_dir, registry)["logged"] > 0
    _, parents, children = structure(db, "mlt")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(c["metrics"]["fold/accuracy"] == [0, 1, 2] for c in children.values())


def test_the_command_line(tmp_path, db, example_env):
    """`benchbox run --mlflow URI` on a suite without [tracking], then `benchbox export mlflow`."""
    path = write_suite(
        tmp_path / "cli.toml",
        SUITE.format(name="cli", out=tmp_path / "runs", tracking="")
        .replace("fake/instant", "example/pixel_logreg")
        .replace("temperature = 2.0", "C = 0.5"),
    )
    env = {**example_env, "MLFLOW_DISABLE_TELEMETRY": "true"}
    res = run_cli("run", path, "--run-dir", tmp_path / "run", "--mlflow", "sqlite:///mlflow.db", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    _, parents, children = structure(db, "cli")
    assert len(parents) == 1 and set(children) == {"syn x a", "syn x b"}
    assert all(c["metrics"]["fold/accuracy"] == [0, 1, 2] for c in children.values())
    res = run_cli("export", "mlflow", tmp_path / "run", "--uri", db, "--experiment", "cli-export", env=env)
    assert res.returncode == 0, res.stderr
    assert shape(structure(db, "cli-export")[2]) == shape(children)
    res = run_cli("export", "mlflow", tmp_path / "nowhere", "--uri", db, env=env)
    assert res.returncode == 1 and "no such run directory" in res.stderr
