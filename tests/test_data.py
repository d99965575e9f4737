"""Data: source loaders (hand-made fixtures and the real X-rays), composition, preprocessing, cache."""

import numpy as np
import pytest
from PIL import Image

from benchbox.data.images import DecodeCache, fit_to_size, pad_to_aspect
from benchbox.errors import DataError
from benchbox_xray.sources import cohen_label, kermany_patient_and_label, read_cohen, read_kermany
from conftest import DATA, needs_data

COHEN_HEADER = "patientid,offset,sex,age,finding,view,modality,date,location,folder,filename,doi,url,license\n"


def img(path, size=(40, 30), value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def cohen_root(tmp_path):
    base = tmp_path / "covid-chestxray-dataset"
    rows = [
        ("1", "COVID-19", "PA", "X-ray", "images", "a.jpg", "Wuhan"),
        ("1", "COVID-19, ARDS", "AP Supine", "X-ray", "images", "b.jpg", "Wuhan"),
        ("2", "Pneumonia/Viral/COVID-19", "AP", "X-ray", "images", "c.png", "Milan"),  # later schema
        ("3", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "images", "d.jpg", ""),
        ("4", "SARS", "PA", "X-ray", "images", "e.jpg", ""),
        ("5", "No Finding", "PA", "X-ray", "images", "f.jpg", ""),
        ("6", "Pneumocystis", "PA", "X-ray", "images", "g.jpg", ""),
        ("7", "COVID-19", "L", "X-ray", "images", "lateral.jpg", ""),  # lateral: excluded
        ("8", "COVID-19", "Axial", "CT", "volumes", "ct.nii.gz", ""),  # CT: excluded
        ("9", "COVID-19", "PA", "X-ray", "images", "missing.jpg", ""),  # listed, not on disk
        ("1", "COVID-19", "PA", "X-ray", "images", "a.jpg", "Wuhan"),  # listed twice
    ]
    lines = [f'{p},0,M,50,"{f}",{v},{m},2020,"{loc}",{folder},{name},,,\n' for p, f, v, m, folder, name, loc in rows]
    base.mkdir(parents=True)
    (base / "metadata.csv").write_text(COHEN_HEADER + "".join(lines))
    for name in "a.jpg b.jpg c.png d.jpg e.jpg f.jpg g.jpg lateral.jpg".split():
        img(base / "images" / name)
    return tmp_path


@pytest.fixture
def kermany_root(tmp_path):
    base = tmp_path / "chest_xray"
    for rel in [
        "train/NORMAL/IM-0117-0001.jpeg",
        "train/NORMAL/IM-0117-0002.jpeg",
        "train/NORMAL/NORMAL2-IM-1427-0001.jpeg",
        "test/NORMAL/IM-0001-0001.jpeg",
        "train/PNEUMONIA/person1_bacteria_1.jpeg",
        "train/PNEUMONIA/person1_virus_6.jpeg",
        "val/PNEUMONIA/person22_bacteria_74.jpeg",
        "train/PNEUMONIA/oddname.jpeg",
    ]:
        img(base / rel)
    (base / "train" / "NORMAL" / ".DS_Store").write_text("x")
    return tmp_path


def test_cohen_selects_frontal_xrays_and_maps_findings(cohen_root):
    table, notes = read_cohen(cohen_root)
    assert sorted(table["id"].str.removeprefix("cohen/")) == [
        "a.jpg",
        "b.jpg",
        "c.png",
        "d.jpg",
        "e.jpg",
        "f.jpg",
        "g.jpg",
    ]
    labels = dict(zip(table["id"].str.removeprefix("cohen/"), table["label"]))
    assert labels == {
        "a.jpg": "covid",
        "b.jpg": "covid",
        "c.png": "covid",
        "d.jpg": "bacterial",
        "e.jpg": "viral",
        "f.jpg": "normal",
        "g.jpg": "other",
    }
    assert table.loc[table["id"] == "cohen/a.jpg", "group"].item() == "cohen:1"
    assert table.loc[table["id"] == "cohen/c.png", "site"].item() == "Milan"
    assert any("missing.jpg" in n for n in notes)


def test_cohen_finding_variants():
    assert cohen_label("COVID-19") == cohen_label("Pneumonia/Viral/COVID-19") == "covid"
    assert cohen_label("Pneumonia/Viral/Influenza") == "viral"
    assert cohen_label("Mycoplasma Bacterial Pneumonia") == "bacterial"
    assert cohen_label("todo") == "other"


def test_cohen_missing_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="metadata.csv is missing.*benchbox data fetch cohen"):
        read_cohen(tmp_path)


def test_kermany_labels_and_patients_from_file_names(kermany_root):
    table, notes = read_kermany(kermany_root)
    got = {r.id.rsplit("/", 1)[1]: (r.label, r.group, r.split) for r in table.itertuples()}
    assert got["person1_bacteria_1.jpeg"] == ("bacterial", "kermany:person1", "train")
    assert got["person1_virus_6.jpeg"] == ("viral", "kermany:person1", "train")
    assert got["person22_bacteria_74.jpeg"][2] == "val"
    assert got["IM-0117-0001.jpeg"][1] == got["IM-0117-0002.jpeg"][1] == "kermany:IM-0117"
    assert got["NORMAL2-IM-1427-0001.jpeg"][1] == "kermany:NORMAL2-IM-1427"
    assert "oddname.jpeg" not in got and any("oddname" in n for n in notes)
    assert kermany_patient_and_label("PNEUMONIA", "person1003_virus_1685") == ("person1003", "viral")


def test_kermany_missing_names_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"\{train,test,val\}/\{NORMAL,PNEUMONIA\}"):
        read_kermany(tmp_path)


@needs_data
def test_real_sources_counts_groups_no_ct_no_lateral():
    cohen, _ = read_cohen(DATA)
    assert cohen["label"].value_counts().to_dict() == {
        "covid": 301,
        "bacterial": 31,
        "other": 29,
        "viral": 21,
        "normal": 19,
    }
    assert set(cohen["view"]) <= {"PA", "AP", "AP Supine", "AP semi erect"}
    assert cohen[cohen["label"] == "covid"]["group"].nunique() == 184
    kermany, _ = read_kermany(DATA)
    assert kermany["label"].value_counts().to_dict() == {"bacterial": 769, "normal": 403, "viral": 394}
    assert kermany[kermany["label"] == "bacterial"]["group"].nunique() == 571
    assert kermany[kermany["label"] == "viral"]["group"].nunique() == 350


def dataset(name):
    from benchbox.plugins import load_registry

    return load_registry().get("dataset", name)


@needs_data
def test_compositions_are_deterministic_and_report_shortfalls():
    d1 = dataset("dataset_1")
    a = d1.samples(dict(d1.defaults), 1, str(DATA))
    assert a.table["label"].value_counts().to_dict() == {"bacterial": 700, "normal": 403, "covid": 224}
    assert any("shortfall" in n and "504" in n and "403" in n for n in a.notes)
    assert a.table["id"].tolist() == d1.samples(dict(d1.defaults), 1, str(DATA)).table["id"].tolist()
    assert a.table["id"].tolist() != d1.samples(dict(d1.defaults), 2, str(DATA)).table["id"].tolist()
    assert set(a.table.loc[a.table["label"] == "covid", "source"]) == {"cohen"}
    d2 = dataset("dataset_2")
    b = d2.samples(dict(d2.defaults), 1, str(DATA))
    pneumonia = b.table[b.table["label"] == "pneumonia"]
    assert pneumonia["finding"].value_counts().to_dict() == {"bacterial": 400, "viral": 314}
    assert b.classes == ("covid", "pneumonia", "normal") and b.positive_class == "covid"


def test_missing_sources_reported_together(tmp_path):
    d1 = dataset("dataset_1")
    with pytest.raises(DataError) as exc:
        d1.samples(dict(d1.defaults), 0, str(tmp_path))
    assert "covid-chestxray-dataset" in str(exc.value) and "chest_xray" in str(exc.value)


def test_padding_keeps_aspect_with_black_borders():
    tall = np.full((100, 50), 200, np.uint8)
    out = pad_to_aspect(tall, 200, 266)
    assert out.shape == (100, 133)
    assert (out[:, :41] == 0).all() and (out[:, 41:91] == 200).all() and (out[:, 91:] == 0).all()
    wide = np.full((50, 200), 200, np.uint8)
    out = fit_to_size(wide, (200, 266))
    assert out.shape == (200, 266)
    assert (out[:20] == 0).all() and (out[-20:] == 0).all() and out[100, 133] == 200


def test_decode_cache_hits_on_second_use_in_memory_and_on_disk(tmp_path):
    path = tmp_path / "x.png"
    img(path, size=(64, 32), mode="RGB")
    cache = DecodeCache(tmp_path / "cache")
    first = cache.get(path, (20, 30))
    assert (cache.misses, cache.hits) == (1, 0) and first.shape == (20, 30) and first.dtype == np.uint8
    cache.get(path, (20, 30))
    assert cache.hits == 1
    fresh = DecodeCache(tmp_path / "cache")  # another process / run: from disk, no decoding
    assert np.array_equal(fresh.get(path, (20, 30)), first) and (fresh.hits, fresh.misses) == (1, 0)


def test_corrupt_image_error_names_the_file_or_is_skipped(kermany_root):
    bad = kermany_root / "chest_xray" / "train" / "NORMAL" / "IM-0999-0001.jpeg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="IM-0999-0001.jpeg.*skip_unreadable"):
        DecodeCache().get(bad, (10, 10))
    k = dataset("kermany")
    s = k.samples({**k.defaults, "skip_unreadable": True}, 0, str(kermany_root))
    assert "kermany/train/NORMAL/IM-0999-0001.jpeg" not in set(s.table["id"])
    assert any("IM-0999-0001.jpeg" in n for n in s.notes)


def test_offline_fetch_names_the_url_and_the_layout(tmp_path, monkeypatch):
    import dataclasses

    import requests

    from benchbox_xray.fetch import KERMANY, SOURCES, fetch

    def offline(*a, **k):
        raise requests.exceptions.ConnectionError("no network (simulated)")

    monkeypatch.setattr(requests, "get", offline)  # what pooch's HTTPDownloader calls
    monkeypatch.setitem(SOURCES, "kermany", dataclasses.replace(KERMANY, retries=0))
    with pytest.raises(DataError) as exc:
        fetch("kermany", tmp_path)
    msg = str(exc.value)
    assert "data.mendeley.com" in msg and "chest_xray/{train,test}/{NORMAL,PNEUMONIA}" in msg and str(tmp_path) in msg
    assert not list(tmp_path.glob("*.zip*"))


EXTERNAL_SUITE = """
name = "ext"
seed = 1
output_dir = "{out}"
[protocol]
k = 2
[training]
epochs = 1
batch_size = 16
[datasets.d1]
plugin = "dataset_1"
covid = 12
bacterial = 12
normal = 12
[datasets.cohen_other]
plugin = "cohen"
labels = ["bacterial", "viral", "normal", "other"]
[backbones.m]
plugin = "torch/mobilenet_v2"
weights = "none"
input_size = [48, 64]
[[experiments]]
datasets = ["d1"]
backbones = ["m"]
external = ["cohen_other"]
"""


@pytest.mark.slow
@needs_data
def test_external_source_is_never_trained_on_and_is_reported_per_source(tmp_path):
    import json

    from conftest import HAS_TORCH, run_cli, write_suite

    if not HAS_TORCH:
        pytest.skip("needs PyTorch")
    suite = write_suite(tmp_path / "ext.toml", EXTERNAL_SUITE.format(out=tmp_path / "runs"))
    res = run_cli("run", suite, "--data-dir", DATA)
    assert res.returncode == 0, res.stderr
    assert "External evaluation" in res.stdout and "cohen_other" in res.stdout and "Per source" in res.stdout
    (run,) = (tmp_path / "runs").iterdir()
    external_ids = None
    for path in (run / "folds").glob("*.json"):
        rec = json.loads(path.read_text())
        ext = rec["external"]["cohen_other"]
        external_ids = set(ext["ids"])
        assert len(ext["probabilities"]) == len(ext["ids"]) == 100
    split = json.loads((run / "splits" / "d1.json").read_text())
    assert not external_ids & set(split["ids"])  # no external image was ever in a training fold
    assert "External evaluation" in (run / "report.md").read_text()


def test_external_dataset_may_not_be_trained_on(tmp_path, registry):
    from benchbox.define.suite import load_suite
    from benchbox.errors import SuiteError
    from conftest import write_suite

    text = EXTERNAL_SUITE.format(out=tmp_path).replace('external = ["cohen_other"]', 'external = ["d1"]')
    with pytest.raises(SuiteError, match="also trained on"):
        load_suite(write_suite(tmp_path / "s.toml", text), registry)


def test_synthetic_class_counts_give_the_studys_composition_with_patients_in_one_class():
    from benchbox_synthetic import SyntheticXrays

    data = SyntheticXrays()
    options = {**data.defaults, "class_counts": {"covid": 224, "pneumonia": 700, "normal": 504}, "patients": 300}
    assert data.check_options(options) == []
    table = data.samples(options, seed=3, data_dir=None).table
    assert table.label.value_counts().to_dict() == {"pneumonia": 700, "normal": 504, "covid": 224}
    assert table.group.nunique() == 300 and table.groupby("group").label.nunique().max() == 1
    assert data.check_options({**options, "class_counts": {"covid": 5}})  # every class needs a count
