"""`benchbox validate` reads the data sets' sample tables (no pixels) and reports their problems with
the suite's; unknown keys get the closest match; `benchbox data export --option`."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from benchbox.define.suite import validate_suite
from benchbox.errors import SuiteError
from conftest import DATA, ROOT, needs_data, run_batch, run_cli

BACKBONE = '[backbones.m]\nplugin = "torch/mobilenet_v2"\nweights = "none"\ninput_size = [32, 32]\n'


def images(root, counts, size=(12, 10)):
    """root/<class>/<i>.png, ``counts`` images per class."""
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full(size, 40 * i % 255, np.uint8)).save(root / cls / f"{cls}{i}.png")
    return root


def flat(text: str) -> str:
    """Text without whitespace: rich wraps long lines (paths included) wherever it likes."""
    return "".join(text.split())


def write(path, text):
    path.write_text(text)
    return path


def test_validate_reports_every_data_set_problem_at_once(tmp_path):
    """Each of these data sets makes `run` fail at once; validate used to call the suite valid."""
    (tmp_path / "empty").mkdir()
    images(tmp_path / "ok", {"covid": 3, "normal": 3})
    write(tmp_path / "nolabel.csv", "path,finding\nok/covid/covid0.png,covid\n")
    write(tmp_path / "ghost.csv", "path,label\nok/covid/covid0.png,covid\nok/normal/gone.png,normal\n")
    body = f"""name = "v"
[protocol]
k = 2
[training]
epoch = 1
[datasets.missing]
plugin = "folder"
root = "{tmp_path / "nothere"}"
[datasets.empty]
plugin = "folder"
root = "{tmp_path / "empty"}"
[datasets.nocsv]
plugin = "csv"
file = "{tmp_path / "none.csv"}"
[datasets.nolabel]
plugin = "csv"
file = "{tmp_path / "nolabel.csv"}"
[datasets.wrongcol]
plugin = "csv"
file = "{tmp_path / "nolabel.csv"}"
columns = {{ label = "findin" }}
[datasets.ghost]
plugin = "csv"
file = "{tmp_path / "ghost.csv"}"
[datasets.fine]
plugin = "folder"
root = "{tmp_path / "ok"}"
{BACKBONE}"""
    suite = write(tmp_path / "s.toml", body)
    res = run_cli("validate", suite, cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    err = flat(res.stderr)
    assert flat("s.toml: 7 problem(s)") in err
    for expected in (
        "training.epoch: unknown key (did you mean epochs?)",
        "data set missing: root = ",
        "nothere",
        "data set empty: no images under",
        "data set nocsv: file = ",
        "none.csv' does not exist",
        "data set nolabel: ",
        "nolabel.csv has no 'label' column; its columns are: path, finding",
        "data set wrongcol: ",
        "has no column 'findin' (named by columns.label) (did you mean finding?)",
        "data set ghost: 1 path(s) in",
        "gone.png",
    ):
        assert flat(expected) in err, res.stderr
    assert "datasetfine" not in err and "Traceback" not in err
    # --no-data checks the file only
    res = run_cli("validate", suite, "--no-data", cwd=tmp_path)
    assert res.returncode == 1 and flat("s.toml: 1 problem(s)") in flat(res.stderr)


@pytest.mark.slow  # `run` imports torch for its availability check
def test_run_gives_the_same_data_set_problems(tmp_path):
    """What validate now reports is what run stops on, in the same words, before any training."""
    (tmp_path / "empty").mkdir()
    write(tmp_path / "nolabel.csv", "path,finding\na.png,covid\n")
    body = f"""name = "r"
[datasets.empty]
plugin = "folder"
root = "{tmp_path / "empty"}"
[datasets.nolabel]
plugin = "csv"
file = "{tmp_path / "nolabel.csv"}"
{BACKBONE}"""
    suite = write(tmp_path / "r.toml", body)
    val = run_cli("validate", suite, cwd=tmp_path)
    run = run_cli("run", suite, cwd=tmp_path)
    assert val.returncode == 1 and run.returncode == 1
    for expected in ("data set empty: no images under", "nolabel.csv has no 'label' column"):
        assert flat(expected) in flat(val.stderr) and flat(expected) in flat(run.stderr), run.stderr
    assert not (tmp_path / "runs").exists()


def test_validate_reports_cross_dataset_positive_class_missing(tmp_path):
    images(tmp_path / "a", {"covid": 3, "normal": 3})
    images(tmp_path / "b", {"normal": 3, "pneumonia": 3})
    body = f"""name = "x"
[protocol]
kind = "cross-dataset"
k = 2
[datasets.a]
plugin = "folder"
root = "{tmp_path / "a"}"
positive_class = "covid"
[datasets.b]
plugin = "folder"
root = "{tmp_path / "b"}"
positive_class = "pneumonia"
{BACKBONE}"""
    # and b's pneumonia folder mapped onto covid: both sets share the positive class (both in one process)
    fixed = body.replace(
        'positive_class = "pneumonia"', 'positive_class = "covid"\nlabel_map = { pneumonia = "covid" }'
    )
    results = run_batch(
        {name: (["validate", write(tmp_path / f"{name}.toml", text)], {}) for name, text in (("x", body), ("y", fixed))}
    )
    res = results["x"]
    err = flat(res.stderr)
    assert res.returncode == 1
    assert flat("trained on 'a' (positive class 'covid'), tested on 'b', whose images have no class 'covid'") in err
    assert flat("trained on 'b' (positive class 'pneumonia'), tested on 'a'") in err
    res = results["y"]
    assert res.returncode == 0 and "valid" in res.stdout, res.stderr


@pytest.mark.slow  # `run` imports torch for its availability check
def test_validate_study_data_absent_gives_runs_message(tmp_path):
    """The study's own data sets (here kermany) are listed by validate; absent, it says what run says."""
    (tmp_path / "nodata").mkdir()
    suite = write(tmp_path / "k.toml", f'name = "k"\n[datasets.kermany]\nplugin = "kermany"\n{BACKBONE}')
    val = run_cli("validate", suite, "--data-dir", tmp_path / "nodata")
    run = run_cli("run", suite, "--data-dir", tmp_path / "nodata", "--run-dir", tmp_path / "r")
    assert val.returncode == 1 and run.returncode == 1
    message = f"Kermany's chest_xray not found under {tmp_path / 'nodata' / 'chest_xray'}"
    for res in (val, run):
        assert flat(message) in flat(res.stderr) and flat("benchbox data fetch kermany") in flat(res.stderr)
    assert not (tmp_path / "r").exists()


@needs_data
def test_validate_study_data_present_is_quick(tmp_path):
    """Listing only: the study's suite with its data is valid in seconds (no pixels decoded)."""
    start = time.perf_counter()
    res = run_cli("validate", ROOT / "suites" / "paper.toml", "--data-dir", DATA)
    assert res.returncode == 0 and "valid" in res.stdout, res.stderr
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(
    "raw, where, suggestion",
    [
        ({"seeds": 1}, "seeds", "seed"),
        ({"protocol": {"stratifed": True}}, "protocol.stratifed", "stratified"),
        ({"training": {"learning_rte": 0.1}}, "training.learning_rte", "learning_rate"),
        (
            {"datasets": {"d": {"plugin": "folder", "root": ".", "skip_unreadible": True}}},
            "datasets.d.skip_unreadible",
            "skip_unreadable",
        ),
        ({"backbones": {"b": {"plugin": "torch/mobilenet_v2", "weight": "none"}}}, "backbones.b.weight", "weights"),
    ],
)
def test_unknown_keys_get_the_closest_match(registry, raw, where, suggestion):
    suite = {
        "name": "k",
        "datasets": {"syn": {"plugin": "synthetic"}},
        "backbones": {"m": {"plugin": "torch/mobilenet_v2"}},
    }
    for key, value in raw.items():
        suite[key] = {**suite[key], **value} if isinstance(value, dict) and key in suite else value
    with pytest.raises(SuiteError) as info:
        validate_suite(suite, "k.toml", registry)
    assert f"{where}: unknown key (did you mean {suggestion}?); allowed: " in "\n".join(info.value.problems)


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(registry):
    suite = {"name": "k", "datasets": {"syn": {"plugin": "synthetic", "zzz": 1}}, "backbones": {}}
    with pytest.raises(SuiteError) as info:
        validate_suite(suite, "k.toml", registry)
    problem = next(p for p in info.value.problems if p.startswith("datasets.syn.zzz"))
    assert "did you mean" not in problem and "allowed: class_counts, images" in problem


def test_export_options(tmp_path):
    results = run_batch({  # the three commands in one process
        "easy": (["data", "export", "synthetic", "--to", tmp_path / "easy", "--size", "32x32",
                  "--option", "lesion_contrast=3", "--option", "images=30", "--option", "patients=10"], {}),
        "plain": (["data", "export", "synthetic", "--to", tmp_path / "plain", "--size", "32x32",
                   "--option", "images=30", "--option", "patients=10"], {}),
        "bad": (["data", "export", "synthetic", "--to", tmp_path / "bad", "--option", "lesion_contrst=3",
                 "--option", "images=many", "--option", "lesion_contrast=9", "--option", "x"], {}),
    })  # fmt: skip
    res = results["easy"]
    assert res.returncode == 0, res.stderr
    assert "wrote 30 images" in res.stdout and len(list((tmp_path / "easy").rglob("*.png"))) == 30
    assert results["plain"].returncode == 0, results["plain"].stderr
    easy, plain = (sorted((tmp_path / d).rglob("*.png")) for d in ("easy", "plain"))
    assert [p.name for p in easy] == [p.name for p in plain]
    assert any(not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))) for a, b in zip(easy, plain))
    res = results["bad"]
    err = flat(res.stderr)
    assert res.returncode == 1 and not (tmp_path / "bad").exists()
    for expected in (
        "4 problem(s)",
        "--option lesion_contrst: unknown key (did you mean lesion_contrast?)",
        "--option images: must be an integer, got 'many'",
        "--option lesion_contrast: must be a number in (0, 5]",
        "--option 'x': write KEY=VALUE",
    ):
        assert flat(expected) in err, res.stderr
