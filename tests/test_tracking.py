"""The [tracking] table and the hand-over to the lifecycle hooks, without MLflow: validation, the
digest (tracking is how, not what), manifest["tracking"] at run start (never stored), and the
mlflow plugin loading, and failing clearly, when MLflow is not installed."""

import sys

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone
from benchbox.define.suite import load_suite
from benchbox.errors import PluginError, SuiteError
from benchbox.execute.runner import run_suite
from benchbox.execute.store import RunStore
from benchbox.plugins import load_registry
from conftest import write_suite

SUITE = """
name = "trk"
output_dir = "{out}"
{tracking}
[protocol]
k = 2
[datasets.syn]
plugin = "synthetic"
images = 20
patients = 10
[backbones.u]
plugin = "fake/uniform"
"""


class Uniform(Backbone):
    name = "fake/uniform"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none"}

    def fit(self, job):
        return job.num_classes

    def predict(self, model, images, ids=None):
        return np.full((len(images), model), 1.0 / model)


class Spy:
    def __init__(self):
        self.manifests = []

    @hookimpl
    def benchbox_backbones(self):
        return [Uniform()]

    @hookimpl
    def benchbox_run_start(self, run_dir, manifest):
        self.manifests.append(manifest)


@pytest.fixture
def spy_registry():
    spy = Spy()
    return spy, load_registry(extra_plugins=[spy])


def suite(tmp_path, registry, tracking=""):
    return load_suite(
        write_suite(tmp_path / "s.toml", SUITE.format(out=tmp_path / "runs", tracking=tracking)), registry
    )


def test_the_tracking_table_is_validated_and_left_out_of_the_digest(tmp_path, spy_registry):
    _, registry = spy_registry
    plain = suite(tmp_path, registry)
    tracked = suite(
        tmp_path, registry, '[tracking]\nmlflow = { uri = "sqlite:///m.db", experiment = "e", artifact_location = "a" }'
    )
    assert plain.tracking == {} and tracked.tracking == {
        "mlflow": {"uri": "sqlite:///m.db", "experiment": "e", "artifact_location": "a"}
    }
    assert tracked.digest == plain.digest  # where results are mirrored is not what the run computes
    assert suite(tmp_path, registry, "[tracking]\nmlflow = {}").tracking == {"mlflow": {}}
    with pytest.raises(SuiteError) as err:
        suite(tmp_path, registry, '[tracking]\nwandb = {}\nmlflow = { uri = 3, experiment = " ", port = 5 }')
    text = str(err.value)
    assert "tracking.wandb: unknown tracker 'wandb'" in text
    assert "tracking.mlflow.uri: must be a string" in text
    assert "tracking.mlflow.experiment: must not be empty" in text
    assert "tracking.mlflow.port: unknown key; allowed: artifact_location, experiment, uri" in text
    with pytest.raises(SuiteError, match="tracking: must be a table"):
        load_suite(
            write_suite(tmp_path / "t.toml", 'tracking = "mlflow"\n' + SUITE.format(out="r", tracking="")), registry
        )


def test_run_start_receives_the_tracking_table_which_is_not_stored(tmp_path, spy_registry, monkeypatch):
    spy, registry = spy_registry
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the plugin must not need MLflow when not tracking
    result = run_suite(suite(tmp_path, registry), registry)
    assert spy.manifests[0]["tracking"] == {} and spy.manifests[0]["suite_digest"] == result.manifest["suite_digest"]
    assert "tracking" not in RunStore(result.run_dir).manifest()
    assert not (result.run_dir / "mlflow.json").exists()


def test_the_mlflow_plugin_loads_without_mlflow_and_says_how_to_install_it(tmp_path, spy_registry, monkeypatch):
    spy, registry = spy_registry
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.delitem(sys.modules, "mlflow.tracking", raising=False)
    fresh = load_registry(extra_plugins=[spy])
    assert fresh.pm.get_plugin("mlflow") is not None and not fresh.broken
    tracked = suite(tmp_path, fresh, '[tracking]\nmlflow = { uri = "sqlite:///m.db" }')
    with pytest.raises(PluginError, match=r"MLflow is not installed.*pip install 'benchbox\[mlflow\]'"):
        run_suite(tracked, fresh)
    assert spy.manifests[-1]["tracking"] == {"mlflow": {"uri": "sqlite:///m.db"}}
    assert not list((tmp_path / "runs").glob("*/folds/*.json"))  # stopped before training
