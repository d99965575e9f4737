"""Shortcut probes: transform geometry, verdicts that fire and do not fire, label probes."""

import hashlib

import numpy as np
import pytest

from benchbox.data.probes import THRESHOLDS, border_only, centre_only, lungs_blackout
from benchbox_validity.rates import Rate, Rates
from benchbox_validity.shortcuts import verdict
from conftest import DATA, needs_data, run_cli, write_suite


def test_lungs_blackout_geometry():
    img = np.full((2, 10, 20), 7, np.uint8)
    out = lungs_blackout(img, fraction=0.6)  # 6 x 12 rectangle, centred
    assert (out[:, 2:8, 4:16] == 0).all()
    mask = np.ones((10, 20), bool)
    mask[2:8, 4:16] = False
    assert (out[:, mask] == 7).all() and (img == 7).all()  # untouched elsewhere; the input is not modified


def test_border_and_centre_are_complements():
    img = np.arange(10 * 20, dtype=np.uint8).reshape(1, 10, 20)
    border, centre = border_only(img, 0.2), centre_only(img, 0.2)  # frame: 2 rows, 4 columns
    assert (border[:, 2:8, 4:16] == 0).all() and (centre[:, :2] == 0).all() and (centre[:, :, :4] == 0).all()
    assert np.array_equal(border + centre, img)


def acc(value: float) -> Rates:
    rate = Rate(int(round(value * 1000)), 1000)
    return Rates(rate, rate, rate)


def test_verdicts_fire_and_do_not_fire():
    std = acc(0.95)
    assert verdict("lungs-blackout", std, acc(0.93), 1 / 3, THRESHOLDS).fires
    no = verdict("lungs-blackout", std, acc(0.36), 1 / 3, THRESHOLDS)
    assert not no.fires and "near chance" in no.text
    assert verdict("border-only", std, acc(0.80), 1 / 3, THRESHOLDS).fires
    assert verdict("centre-only", std, acc(0.50), 1 / 3, THRESHOLDS).fires
    src = verdict("source-as-label", std, acc(0.99), 0.5, THRESHOLDS, source_coincides=True)
    assert src.fires and "cannot separate disease from source" in src.text
    assert not verdict("source-as-label", std, acc(0.7), 0.5, THRESHOLDS, source_coincides=True).fires
    strict = {**THRESHOLDS, "same_within_points": 1.0}
    assert "information outside the lungs" in verdict("lungs-blackout", std, acc(0.90), 1 / 3, strict).text


PROBE_SUITE = """
name = "probes"
seed = 1
output_dir = "{out}"
[protocol]
k = 3
grouped = true
[datasets.syn]
plugin = "synthetic"
images = 150
patients = 60
shortcut = {shortcut}
[backbones.linear]
plugin = "example/pixel_logreg"
input_size = [32, 40]
[probes]
lungs-blackout = {{ fraction = 0.6 }}
border-only = {{ frame = 0.12 }}
centre-only = {{ frame = 0.12 }}
"""


def _verdicts(run_dir):
    text = (run_dir / "report.md").read_text()
    lines = [
        l
        for l in text.splitlines()
        if l.startswith("| lungs-blackout") or l.startswith("| border-only") or l.startswith("| centre-only")
    ]
    return {l.split("|")[1].strip(): l.split("|")[2].strip() for l in lines if l.split("|")[2].strip() in ("YES", "no")}


@pytest.mark.slow
def test_planted_shortcut_makes_the_verdicts_fire(tmp_path, example_env):
    suite = write_suite(tmp_path / "s.toml", PROBE_SUITE.format(out=tmp_path / "runs", shortcut="true"))
    res = run_cli("run", suite, env=example_env)
    assert res.returncode == 0, res.stderr
    assert "Shortcut report: syn x linear" in res.stdout and "the model does not need the lungs" in res.stdout
    (run,) = (tmp_path / "runs").iterdir()
    # the marker sits in the border: blacking the lungs keeps the accuracy, the border alone predicts the
    # class, and removing the border costs accuracy
    assert _verdicts(run) == {"lungs-blackout": "YES", "border-only": "YES", "centre-only": "YES"}
    page = tmp_path / "lb.html"
    lb = run_cli("leaderboard", run, "--format", "html", "-o", page, env=example_env)
    assert lb.returncode == 0, lb.stderr
    tables = page.read_text().split("<h2>Plots")[0]
    assert "lungs-blackout: SHORTCUT" in tables and "syn@lungs-blackout" not in tables  # beside its entry, not ranked


@pytest.mark.slow
def test_without_shortcut_blacking_the_lungs_drops_to_chance(tmp_path, example_env):
    suite = write_suite(tmp_path / "s.toml", PROBE_SUITE.format(out=tmp_path / "runs", shortcut="false"))
    res = run_cli("run", suite, env=example_env)
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    verdicts = _verdicts(run)
    assert verdicts == {"lungs-blackout": "no", "border-only": "no", "centre-only": "no"}
    assert "near chance" in res.stdout


@needs_data
def test_source_as_label_and_within_source_select_the_right_samples(registry):
    from benchbox.define.plan import prepare_data
    from benchbox.define.suite import validate_suite
    from benchbox.execute.records import CellKey, DataKey

    raw = {
        "name": "sel",
        "seed": 0,
        "protocol": {"k": 3, "grouped": True},
        "datasets": {
            "d1": {"plugin": "dataset_1", "covid": 30, "bacterial": 30, "normal": 30},
            "inside": {"plugin": "cohen", "binary": True},
        },
        "backbones": {"m": {"plugin": "torch/mobilenet_v2", "weights": "none"}},
        "experiments": [{"datasets": ["d1"], "backbones": ["m"]}],
        "probes": {"source-as-label": {}, "within-source": {"dataset": "inside"}},
    }
    suite = validate_suite(raw, "sel.toml", registry)
    assert CellKey("d1", "m", "source-as-label") in suite.cells and CellKey("inside", "m") in suite.cells
    prepared = prepare_data(suite, registry, str(DATA))
    src = prepared[DataKey("d1", "source-as-label")]
    base = prepared[DataKey("d1")].samples.table
    assert src.samples.classes == ("cohen", "kermany") and src.samples.positive_class == "cohen"
    assert (src.samples.table["label"] == base["source"]).all() and list(src.samples.table["id"]) == list(base["id"])
    inside = prepared[DataKey("inside")].samples
    assert set(inside.table["source"]) == {"cohen"} and inside.classes == ("covid", "not_covid")
    assert set(inside.table.loc[inside.table["label"] == "not_covid", "finding"]) == {
        "bacterial",
        "viral",
        "normal",
        "other",
    }
    for key in (DataKey("d1", "source-as-label"), DataKey("inside")):  # patient-grouped folds
        table, folds = prepared[key].samples.table, prepared[key].folds
        assert all(len(set(folds[table["group"] == g])) == 1 for g in table["group"].unique())


def test_probes_never_touch_the_source_files(tmp_path, registry):
    from PIL import Image

    from benchbox.data.images import DecodeCache
    from benchbox.data.probes import transform

    path = tmp_path / "x.png"
    Image.fromarray(np.full((40, 50), 200, np.uint8)).save(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    images = DecodeCache().load_many([str(path)], (20, 25))
    for probe in ("lungs-blackout", "border-only", "centre-only"):
        transform(probe, images, {})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and (images == 200).all()


def test_unknown_probe_and_bad_options_are_reported(tmp_path, registry):
    from benchbox.define.suite import load_suite
    from benchbox.errors import SuiteError

    text = (
        'name = "x"\n[datasets.s]\nplugin = "synthetic"\n[backbones.b]\nplugin = "torch/mobilenet_v2"\n'
        '[probes]\nlung-blackout = {}\nborder-only = { frame = 0.7 }\ncentre-only = { apply = "train" }\n'
    )
    with pytest.raises(SuiteError) as exc:
        load_suite(write_suite(tmp_path / "s.toml", text), registry)
    text = "\n".join(exc.value.problems)
    assert "probes.lung-blackout: unknown key" in text and "probes.border-only.frame" in text
    assert "probes.centre-only.apply" in text
