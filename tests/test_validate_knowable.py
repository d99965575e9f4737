"""What can be known before training is said by `benchbox validate`: each data set's class, image and
patient counts; the same images under two aliases in an external test; a class so small it is most
likely a misspelt label, named with its files and the label_map fix."""

import numpy as np
from PIL import Image

from benchbox.define.suite import load_suite
from benchbox.errors import SuiteError
from conftest import TORCH_MNV2, needs_torch, run_cli, tiny_suite, write_suite

CROSS = """
name = "x"
output_dir = "{out}"
[protocol]
kind = "cross-dataset"
k = 3
[datasets.a]
plugin = "synthetic"
images = 30
patients = 12
[datasets.b]
plugin = "synthetic"
images = {b_images}
patients = 12
[backbones.m]
plugin = "torch/mobilenet_v2"
weights = "none"
input_size = [32, 32]
"""


@needs_torch
def test_validate_prints_each_data_sets_classes_images_and_patients(tmp_path):
    res = run_cli("validate", tiny_suite(tmp_path, TORCH_MNV2))
    assert res.returncode == 0, res.stderr
    assert "data set syn: 30 images, 12 patients — covid 8 (4 patients), pneumonia 11 (4 patients)" in res.stdout


def test_the_same_images_under_two_aliases_are_not_an_external_test(tmp_path, registry):
    same = write_suite(tmp_path / "same.toml", CROSS.format(out=tmp_path / "runs", b_images=30))
    try:
        load_suite(same, registry, check_data=True)
    except SuiteError as exc:
        text = " ".join(str(exc).split())
    else:
        raise AssertionError("train = test was accepted")
    assert "datasets.a and datasets.b are the same images" in text and "not an external test" in text
    other = write_suite(tmp_path / "other.toml", CROSS.format(out=tmp_path / "runs", b_images=36))
    assert load_suite(other, registry, check_data=True).data_counts["b"]["images"] == 36


def test_a_one_image_class_is_named_with_its_file_and_the_label_map_fix(tmp_path, registry):
    rows = ["path,label,patient"]
    for i in range(24):
        label = ["covid", "normal", "pneumonia"][i % 3]
        Image.fromarray(np.full((20, 20), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},p{i}")
    rows[5] = "4.png,covid-19,p4"  # one row labelled with another spelling
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    suite = write_suite(
        tmp_path / "s.toml",
        f"""
name = "s"
output_dir = "{tmp_path / "runs"}"
[protocol]
k = 3
[datasets.d]
plugin = "csv"
file = "{tmp_path / "labels.csv"}"
positive_class = "covid"
[backbones.m]
plugin = "torch/mobilenet_v2"
weights = "none"
input_size = [32, 32]
""",
    )
    try:
        load_suite(suite, registry, check_data=True)
    except SuiteError as exc:
        text = " ".join(str(exc).split())
    else:
        raise AssertionError("a one-image class was accepted for 3-fold stratified CV")
    assert "class 'covid-19' has 1 image(s) (4.png) against 8 for the largest (did you mean covid?)" in text
    assert 'datasets.d.label_map (label_map = { "covid-19" = "<the class it means>" })' in text


def test_an_input_below_a_networks_minimum_is_refused_at_validate(tmp_path, registry):
    body = CROSS.format(out=tmp_path / "runs", b_images=36).replace("torch/mobilenet_v2", "torch/inception_v3")
    suite = write_suite(tmp_path / "s.toml", body.replace("input_size = [32, 32]", "input_size = [32, 38]"))
    try:
        load_suite(suite, registry)
    except SuiteError as exc:
        text = " ".join(str(exc).split())
    else:
        raise AssertionError("torch/inception_v3 at 32x38 was accepted")
    assert "backbones.m.input_size: 32x38 is below what torch/inception_v3 takes (75x75 at least" in text


def test_data_describe_reads_a_suites_data_set_with_the_suites_options():
    res = run_cli("data", "describe", "--suite", "suites/quickstart.toml")
    assert res.returncode == 0, res.stderr
    assert "synthetic: 96 images, 36 patients" in res.stdout  # the suite's images = 96, not the default
    wrong = run_cli("data", "describe", "--suite", "suites/quickstart.toml", "syntetic")
    assert wrong.returncode == 1 and "has no data set 'syntetic' (did you mean synthetic?)" in wrong.stderr
