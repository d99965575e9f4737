"""Data sets a user points at (folder, csv), DICOM decoding, export, and the study plugins' root,
split and skip_unreadable options. Real X-rays from ../shared/data where a test needs real pixels."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchbox.data.images import (
    DecodeCache,
    decode_dicom,
    decode_file,
    fit_to_size,
    to_grayscale_array,
    unreadable_reason,
)
from benchbox.errors import DataError
from conftest import DATA, needs_data

KERMANY = DATA / "chest_xray" / "train"
COHEN_IMAGES = DATA / "covid-chestxray-dataset" / "images"
HAS_PYDICOM = importlib.util.find_spec("pydicom") is not None  # imported by the tests that use it
needs_pydicom = pytest.mark.skipif(not HAS_PYDICOM, reason="pydicom not installed (pip install 'benchbox[dicom]')")


def plugin(name):
    from benchbox.plugins import load_registry

    return load_registry().get("dataset", name)


def samples(name, data_dir=None, **options):
    p = plugin(name)
    return p.samples({**p.defaults, **options}, 0, data_dir)


def img(path, size=(40, 30), value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def real(kind="normal", n=0):
    """A real X-ray from the shared data (grayscale JPEG)."""
    folder = KERMANY / ("NORMAL" if kind == "normal" else "PNEUMONIA")
    return sorted(folder.iterdir())[n]


def gray_of(path):
    with Image.open(path) as im:
        return to_grayscale_array(im)


#: the images of ``tree``, in id order
TREE_IMAGES = [
    "covid/person1_a.png",
    "covid/person1_b.png",
    "covid/site2/person2_a.png",
    "normal/person3_a.jpg",
    "normal/person4_a.bmp",
    "pneumonia/person5_a.tif",
    "pneumonia/person5_b.tiff",
    "pneumonia/person6_a.jpeg",
]


@pytest.fixture
def tree(tmp_path):
    """mydata/{covid,normal,pneumonia}/..., with nesting, patients in names, junk files."""
    root = tmp_path / "mydata"
    for rel in TREE_IMAGES:
        img(root / rel, value=40 + len(rel))
    (root / "covid" / "README.txt").write_text("notes")
    (root / "normal" / ".DS_Store").write_text("x")
    (root / ".hidden").mkdir()
    img(root / ".hidden" / "x.png")
    return root


# --- folder ---------------------------------------------------------------------------------------


def test_folder_classes_ids_and_sources_from_the_tree(tree):
    s = samples("folder", root=str(tree))
    assert s.classes == ("covid", "normal", "pneumonia") and s.positive_class == "covid"
    assert sorted(s.table["id"]) == TREE_IMAGES  # every image, nested ones too; no junk, no hidden folder
    assert dict(zip(s.table["id"], s.table["label"]))["covid/site2/person2_a.png"] == "covid"
    assert set(s.table["source"]) == {"mydata"}
    assert (s.table["group"] == s.table["id"]).all()  # no group_pattern: one group per image ...
    assert any("no group_pattern" in w and "group_pattern" in w for w in s.warnings)  # ... and the user is told
    assert any("README.txt" in n for n in s.notes)
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_folder_group_pattern_gives_patients(tree):
    s = samples("folder", root=str(tree), group_pattern=r"person(\d+)_", source="site-a")
    groups = dict(zip(s.table["id"], s.table["group"]))
    assert groups["covid/person1_a.png"] == groups["covid/person1_b.png"] == "1"
    assert groups["pneumonia/person5_a.tif"] == groups["pneumonia/person5_b.tiff"] == "5"
    assert s.table["group"].nunique() == 6
    assert set(s.table["source"]) == {"site-a"}
    assert not any("group_pattern" in w for w in s.warnings)


def test_folder_group_pattern_partial_match_is_reported(tree):
    img(tree / "normal" / "anon.png")
    s = samples("folder", root=str(tree), group_pattern=r"person(\d+)_")
    assert s.table.set_index("id").loc["normal/anon.png", "group"] == "normal/anon.png"
    assert any("does not match 1 of 9" in w and "normal/anon.png" in w for w in s.warnings)


@pytest.mark.parametrize(
    "pattern, message",
    [
        (r"person(\d+", "not a valid regular expression"),
        (r"person\d+_", "has no group"),
        (r"patient(\d+)", "matches no image path.*covid/person1_a.png"),
    ],
)
def test_folder_bad_group_pattern_is_a_clear_error(tree, pattern, message):
    with pytest.raises(DataError, match=message):
        samples("folder", root=str(tree), group_pattern=pattern)


def test_folder_classes_order_subset_label_map_and_positive(tree):
    (tree / "COVID-19").mkdir()
    img(tree / "COVID-19" / "person9_x.png")
    s = samples(
        "folder", root=str(tree), label_map={"COVID-19": "covid"}, classes=["normal", "covid"], positive_class="covid"
    )
    assert s.classes == ("normal", "covid") and s.positive_class == "covid"
    assert s.table.set_index("id").loc["COVID-19/person9_x.png", "label"] == "covid"
    assert (s.table["label"] == "covid").sum() == 4 and (s.table["label"] == "normal").sum() == 2
    assert "pneumonia" not in set(s.table["label"])
    assert any("pneumonia" in w and "left out" in w for w in s.warnings)
    assert s.labels.tolist() == [0, 0, 1, 1, 1, 1]  # the order of classes, not alphabetical
    default = samples("folder", root=str(tree), classes=["normal", "pneumonia"])
    assert default.positive_class == "normal"  # "" = the first class


def test_folder_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"root = .*nowhere.* does not exist.*one sub-folder"):
        samples("folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="set root"):
        samples("folder")


def test_folder_relative_root_from_working_dir_or_data_dir(tree, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert len(samples("folder", root="mydata").table) == 8
    monkeypatch.chdir(tree / "covid")
    assert len(samples("folder", data_dir=str(tmp_path), root="mydata").table) == 8


def test_folder_without_images(tmp_path):
    root = tmp_path / "empty"
    (root / "covid").mkdir(parents=True)
    (root / "covid" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images under .*empty.*root/<class>/<image>.*notes.txt"):
        samples("folder", root=str(root))
    img(tmp_path / "flat" / "a.png")
    img(tmp_path / "flat" / "b.png")
    with pytest.raises(DataError, match="lie directly in it.*one sub-folder per class"):
        samples("folder", root=str(tmp_path / "flat"))


def test_folder_empty_class_folder(tree):
    (tree / "viral").mkdir()
    # refused, naming the folder, as torchvision's ImageFolder does unless allow_empty (issue 24)
    with pytest.raises(DataError, match=r"class folder\(s\) '.*viral' hold no images.*allow_empty = true"):
        samples("folder", root=str(tree))
    s = samples("folder", root=str(tree), allow_empty=True)
    assert "viral" not in s.classes and any("viral" in w and "no images" in w for w in s.warnings)
    with pytest.raises(DataError, match=r"class folder .*viral.* is empty.*classes names 'viral'"):
        samples("folder", root=str(tree), classes=["covid", "viral"])


def test_folder_classes_entry_without_folder_and_too_few_classes(tree):
    with pytest.raises(DataError, match=r"classes names 'covid19'.*has: covid, normal, pneumonia.*label_map"):
        samples("folder", root=str(tree), classes=["covid19", "normal"])
    with pytest.raises(DataError, match="1 class.*at least 2"):
        samples("folder", root=str(tree), classes=["covid"])
    shutil.rmtree(tree / "normal")
    shutil.rmtree(tree / "pneumonia")
    with pytest.raises(DataError, match=r"1 class\(es\) \(covid\).*at least 2"):
        samples("folder", root=str(tree))


def test_folder_positive_class_must_be_a_class(tree):
    with pytest.raises(DataError, match=r"positive_class = 'sick' is not a class.*covid, normal, pneumonia"):
        samples("folder", root=str(tree), positive_class="sick")


def test_folder_split_folders_are_not_classes(tmp_path):
    for rel in ["train/covid/a.png", "train/normal/b.png", "test/covid/c.png", "test/normal/d.png"]:
        img(tmp_path / "ds" / rel)
    with pytest.raises(DataError, match="split folders.*set root to one split"):
        samples("folder", root=str(tmp_path / "ds"))


def test_folder_bad_option_values(tree):
    with pytest.raises(DataError, match="classes must be a list of class names"):
        samples("folder", root=str(tree), classes=[1, 2])
    with pytest.raises(DataError, match="label_map must map names to class names"):
        samples("folder", root=str(tree), label_map={"COVID-19": 3})


def test_folder_label_map_typo_is_reported(tree):
    s = samples("folder", root=str(tree), label_map={"Covid": "covid"})
    assert any("'Covid'" in w and "not a folder" in w for w in s.warnings)


@needs_data
def test_folder_loads_real_xrays_padded_grayscale(tmp_path):
    root = tmp_path / "xr"
    (root / "normal").mkdir(parents=True)
    (root / "covid").mkdir()
    shutil.copy(real("normal"), root / "normal" / "n.jpeg")
    colour = next(p for p in sorted(COHEN_IMAGES.iterdir()) if Image.open(p).mode == "RGB")
    shutil.copy(colour, root / "covid" / ("c" + colour.suffix))
    s = samples("folder", root=str(root))
    x = s.load(s.table, (64, 80))
    assert x.shape == (2, 64, 80) and x.dtype == np.uint8
    i = s.table.index[s.table["label"] == "normal"][0]
    assert np.array_equal(x[i], fit_to_size(gray_of(real("normal")), (64, 80)))
    j = s.table.index[s.table["label"] == "covid"][0]
    with Image.open(colour) as im:
        expected = np.asarray(im.convert("L"))  # colour images are converted to grayscale
    assert np.array_equal(x[j], fit_to_size(expected, (64, 80)))


def test_folder_fingerprint_names_the_content(tree):
    a = samples("folder", root=str(tree)).fingerprint
    assert a == samples("folder", root=str(tree)).fingerprint
    img(tree / "normal" / "person7_a.png")
    b = samples("folder", root=str(tree)).fingerprint
    assert b != a
    img(tree / "normal" / "person7_a.png", size=(41, 30))  # same name, other content (size)
    assert samples("folder", root=str(tree)).fingerprint != b
    assert (
        samples("folder", root=str(tree), label_map={"normal": "healthy"}).fingerprint
        != samples("folder", root=str(tree)).fingerprint
    )


# --- unreadable images (issue 14 item 5) ---------------------------------------------------------


def truncated_jpeg(dest):
    """A real JPEG cut in half: Pillow's verify() passes it, decoding it fails."""
    data = real("normal").read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: len(data) // 2])
    with Image.open(dest) as im:
        im.verify()  # the trap: this does not raise
    return dest


@needs_data
def test_truncated_jpeg_is_unreadable_and_skipped(tree):
    bad = truncated_jpeg(tree / "normal" / "person8_cut.jpeg")
    assert "truncated" in unreadable_reason(bad)
    s = samples("folder", root=str(tree), skip_unreadable=True)
    assert "normal/person8_cut.jpeg" not in set(s.table["id"])
    assert any("skipped 1 unreadable" in w and "person8_cut.jpeg" in w for w in s.warnings)
    s.load(s.table, (16, 16))  # what is kept loads


@needs_data
def test_unreadable_advice_matches_the_setting(tree):
    bad = truncated_jpeg(tree / "normal" / "person8_cut.jpeg")
    s = samples("folder", root=str(tree))  # listing does not decode
    with pytest.raises(DataError, match=r"person8_cut.jpeg.*truncated.*set skip_unreadable = true") as exc:
        s.load(s.table, (16, 16))
    assert "already" not in str(exc.value)
    shutil.copy(real("normal"), bad)  # readable when listed ...
    s = samples("folder", root=str(tree), skip_unreadable=True)
    truncated_jpeg(bad)  # ... damaged afterwards
    with pytest.raises(DataError) as exc:
        s.load(s.table, (17, 17))
    msg = str(exc.value)
    assert "person8_cut.jpeg" in msg and "skip_unreadable = true, and this file was readable" in msg
    assert "set skip_unreadable = true on" not in msg


@needs_data
def test_xray_skip_unreadable_decodes_fully(tmp_path):
    base = tmp_path / "chest_xray" / "train"
    for kind, n in (("normal", 0), ("normal", 1), ("pneumonia", 0)):
        folder = base / kind.upper()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(real(kind, n), folder / real(kind, n).name)
    cut = truncated_jpeg(base / "NORMAL" / "IM-9999-0001.jpeg")
    k = plugin("kermany")
    s = k.samples({**k.defaults, "skip_unreadable": True}, 0, str(tmp_path))
    assert "kermany/train/NORMAL/IM-9999-0001.jpeg" not in set(s.table["id"]) and len(s.table) == 3
    assert any("IM-9999-0001.jpeg" in w and "skip_unreadable" in w for w in s.warnings)
    s.load(s.table, (16, 16))
    plain = k.samples(dict(k.defaults), 0, str(tmp_path))
    with pytest.raises(DataError, match="IM-9999-0001.jpeg.*set skip_unreadable = true on the data set"):
        plain.load(plain.table, (18, 18))
    assert "IM-9999-0001" not in " ".join(plain.warnings)
    assert cut.exists()


def test_decode_cache_default_advice_and_pickling(tmp_path):
    import pickle

    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x.png.*skip_unreadable = true") as exc:
        DecodeCache().get(bad, (8, 8))
    again = pickle.loads(pickle.dumps(exc.value))
    assert str(again) == str(exc.value) and type(again) is type(exc.value)


# --- csv ------------------------------------------------------------------------------------------


def write_csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_columns_mapping_relative_paths_patients_and_split(tree):
    csv = write_csv(
        tree / "meta" / "labels.csv",
        "filename,finding,patient_id,site,fold\n"
        "../covid/person1_a.png,COVID-19,p1,A,train\n"
        "../covid/person1_b.png,COVID-19,p1,A,test\n"
        "../normal/person3_a.jpg,No Finding,p3,B,train\n"
        f"{tree / 'pneumonia' / 'person5_a.tif'},Pneumonia,p5,,train\n",
    )
    s = samples(
        "csv",
        file=str(csv),
        columns={"path": "filename", "label": "finding", "patient": "patient_id", "source": "site", "split": "fold"},
        label_map={"COVID-19": "covid", "No Finding": "normal", "Pneumonia": "pneumonia"},
        split="train",
    )
    t = s.table.set_index("id")
    # the id is the path as written (normalised); the file is found relative to the CSV's folder
    assert sorted(t.index) == sorted(
        ["../covid/person1_a.png", "../normal/person3_a.jpg", str(tree / "pneumonia/person5_a.tif")]
    )
    assert t.loc["../covid/person1_a.png", ["label", "group", "source"]].tolist() == ["covid", "p1", "A"]
    assert t.loc["../covid/person1_a.png", "path"] == str(tree / "covid" / "person1_a.png")
    assert t.loc[str(tree / "pneumonia/person5_a.tif"), "source"] == "meta"  # blank cell: the CSV folder's name
    assert s.classes == ("covid", "normal", "pneumonia") and s.positive_class == "covid"
    assert not any("patient" in w for w in s.warnings)
    assert s.load(s.table, (10, 12)).shape == (3, 10, 12)


def test_csv_defaults_without_patient_column_warns(tree):
    csv = write_csv(tree / "labels.csv", "path,label\ncovid/person1_a.png,covid\nnormal/person3_a.jpg,normal\n")
    s = samples("csv", file=str(csv))
    assert (s.table["group"] == s.table["id"]).all()
    assert any("no patient column" in w for w in s.warnings)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"file = .*labels.csv.* does not exist"):
        samples("csv", file=str(tmp_path / "labels.csv"))


def test_csv_missing_label_column_names_the_columns_and_the_option(tree):
    csv = write_csv(tree / "labels.csv", "filename,finding\ncovid/person1_a.png,covid\n")
    with pytest.raises(DataError) as exc:
        samples("csv", file=str(csv), columns={"path": "filename"})
    msg = str(exc.value)
    assert "no 'label' column" in msg and "filename, finding" in msg and "columns = { label =" in msg
    with pytest.raises(DataError, match=r"no column 'diagnosis' \(named by columns.label\).*filename, finding"):
        samples("csv", file=str(csv), columns={"path": "filename", "label": "diagnosis"})
    with pytest.raises(DataError, match="unknown key.*'image'"):
        samples("csv", file=str(csv), columns={"image": "filename"})


def test_csv_path_that_does_not_exist(tree):
    csv = write_csv(
        tree / "labels.csv",
        "path,label\ncovid/person1_a.png,covid\nnormal/gone.png,normal\nnormal/person3_a.jpg,normal\n",
    )
    with pytest.raises(DataError, match=r"line 3: 'normal/gone.png'.*skip_unreadable = true"):
        samples("csv", file=str(csv))
    s = samples("csv", file=str(csv), skip_unreadable=True)
    assert sorted(s.table["id"]) == ["covid/person1_a.png", "normal/person3_a.jpg"]
    assert any("line 3" in w and "gone.png" in w for w in s.warnings)


def test_csv_split_errors_and_empty_cells(tree):
    csv = write_csv(
        tree / "labels.csv", "path,label,split\ncovid/person1_a.png,covid,train\nnormal/person3_a.jpg,normal,train\n"
    )
    with pytest.raises(DataError, match=r"split = 'test' matches no row.*train"):
        samples("csv", file=str(csv), split="test")
    no_split = write_csv(tree / "b.csv", "path,label\ncovid/person1_a.png,covid\n")
    with pytest.raises(DataError, match="has no split column"):
        samples("csv", file=str(no_split), split="train")
    blank = write_csv(tree / "c.csv", "path,label\ncovid/person1_a.png,\nnormal/person3_a.jpg,normal\n")
    with pytest.raises(DataError, match=r"line\(s\) 2 have an empty label"):
        samples("csv", file=str(blank))


def test_csv_duplicates_and_conflicts(tree):
    conflict = write_csv(
        tree / "a.csv",
        "path,label\ncovid/person1_a.png,covid\nnormal/person3_a.jpg,normal\n./covid/person1_a.png,normal\n",
    )
    with pytest.raises(DataError, match=r"different labels on lines 2, 4"):
        samples("csv", file=str(conflict))
    same = write_csv(
        tree / "b.csv",
        "path,label\ncovid/person1_a.png,covid\nnormal/person3_a.jpg,normal\ncovid/person1_a.png,covid\n",
    )
    s = samples("csv", file=str(same))
    assert len(s.table) == 2 and any("duplicate" in w and "4" in w for w in s.warnings)


def test_csv_not_utf8_names_the_line(tree):
    csv = tree / "labels.csv"
    csv.write_bytes(
        "path,label,patient\ncovid/person1_a.png,covid,Jos\u00e9\n".encode("utf-8")
        + "normal/person3_a.jpg,normal,Ren\u00e9\n".encode("cp1252")
    )
    with pytest.raises(DataError, match=r"labels.csv is not UTF-8: line\(s\) 3 .*Save the file as UTF-8"):
        samples("csv", file=str(csv))
    csv.write_bytes(
        b"\xef\xbb\xbf"
        + "path,label,patient\ncovid/person1_a.png,covid,Jos\u00e9\nnormal/person3_a.jpg,normal,Ren\u00e9\n".encode(
            "utf-8"
        )
    )  # UTF-8 with a BOM (Excel)
    assert set(samples("csv", file=str(csv)).table["group"]) == {"Jos\u00e9", "Ren\u00e9"}


# --- DICOM ----------------------------------------------------------------------------------------


def write_dicom(path, pixels, photometric="MONOCHROME2", bits=8, with_pixels=True, **elements):
    """A minimal DICOM file (explicit VR little endian) holding ``pixels``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "anon"
    if with_pixels:
        pixels = np.ascontiguousarray(pixels)
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
        if pixels.ndim == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return path


@needs_data
@needs_pydicom
def test_dicom_monochrome2_and_monochrome1(tmp_path):
    png = gray_of(real("normal"))
    assert np.array_equal(decode_dicom(write_dicom(tmp_path / "m2.dcm", png)), png)
    inverted = write_dicom(tmp_path / "m1.dcm", 255 - png, photometric="MONOCHROME1")
    assert np.array_equal(decode_dicom(inverted), png)  # MONOCHROME1: low values are white


@needs_data
@needs_pydicom
def test_dicom_16bit_rescale_and_window(tmp_path):
    png = gray_of(real("pneumonia")).astype(np.float64)
    stored = (png * 16 + 1000).astype(np.uint16)  # 1000..5080
    # modality values = stored * 0.5 - 500 = 8 * png; the window [0, 2040] gives png back
    path = write_dicom(
        tmp_path / "w.dcm",
        stored,
        bits=16,
        RescaleSlope="0.5",
        RescaleIntercept="-500",
        WindowCenter=["1020.5", "40"],
        WindowWidth=["2041", "400"],
    )  # multi-valued: the first
    out = decode_dicom(path)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - png).max() <= 1
    narrow = decode_dicom(
        write_dicom(
            tmp_path / "n.dcm",
            stored,
            bits=16,
            RescaleSlope="0.5",
            RescaleIntercept="-500",
            WindowCenter="512",
            WindowWidth="512",
        )
    )
    values = png * 8
    assert (narrow[values <= 256] == 0).all() and (narrow[values > 767] == 255).all()
    linear = (values > 256) & (values <= 767)
    expected = np.clip(((values - 511.5) / 511 + 0.5) * 255, 0, 255)
    assert np.abs(narrow[linear] - expected[linear]).max() <= 0.5 + 1e-9
    # no window: min-max of the rescaled values onto 0..255
    plain = decode_dicom(write_dicom(tmp_path / "p.dcm", stored, bits=16, RescaleSlope="0.5", RescaleIntercept="-500"))
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    assert plain.min() == 0 and plain.max() == 255 and np.abs(plain - expected).max() <= 0.5 + 1e-9


@needs_data
@needs_pydicom
def test_dicom_colour_is_converted_to_gray(tmp_path):
    try:
        from pydicom.pixels import convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space

    colour = next(p for p in sorted(COHEN_IMAGES.iterdir()) if Image.open(p).mode == "RGB")
    with Image.open(colour) as im:
        rgb = np.asarray(im.convert("RGB"))
        gray = np.asarray(im.convert("L")).astype(int)  # what a colour PNG or JPEG becomes
    assert np.array_equal(decode_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")), gray)
    ybr = write_dicom(tmp_path / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"), photometric="YBR_FULL")
    assert np.abs(decode_dicom(ybr).astype(int) - gray).max() <= 2


@needs_pydicom
def test_dicom_without_pixels_or_not_dicom_is_a_clear_error(tmp_path):
    report = write_dicom(tmp_path / "report.dcm", None, with_pixels=False)
    with pytest.raises(DataError, match=r"report.dcm is a DICOM file without pixel data"):
        decode_dicom(report)
    with pytest.raises(DataError, match=r"report.dcm is a DICOM file without pixel data") as info:
        DecodeCache().get(report, (8, 8))
    assert "remove it from the data set, or set skip_unreadable = true" in str(info.value)
    fake = tmp_path / "fake.dcm"
    fake.write_text("hello, not DICOM")
    with pytest.raises(DataError, match="fake.dcm is not a DICOM file"):
        decode_file(fake, (8, 8))
    assert unreadable_reason(report) is not None and unreadable_reason(fake) is not None


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(
        DataError, match=r"x.dcm is a DICOM file; reading DICOM needs pydicom: pip install 'benchbox\[dicom\]'"
    ):
        decode_file(path, (8, 8))
    with pytest.raises(DataError, match=r"benchbox\[dicom\]"):  # not "skipped" as if the file were bad
        unreadable_reason(path)


@needs_data
@needs_pydicom
def test_folder_reads_dicom_with_and_without_extension(tmp_path):
    root = tmp_path / "hospital"
    png = gray_of(real("normal"))
    write_dicom(root / "normal" / "study1" / "IM0001", png)  # no extension: found by its DICM preamble
    write_dicom(root / "normal" / "b.dicom", png)
    write_dicom(root / "covid" / "1.2.840.10008.3", 255 - png, photometric="MONOCHROME1")  # UID-like name
    img(root / "covid" / "c.png")
    write_dicom(root / "covid" / "sr.dcm", None, with_pixels=False)
    s = samples("folder", root=str(root), skip_unreadable=True)
    assert sorted(s.table["id"]) == ["covid/1.2.840.10008.3", "covid/c.png", "normal/b.dicom", "normal/study1/IM0001"]
    assert any("sr.dcm" in w and "without pixel data" in w for w in s.warnings)
    x = s.load(s.table, (40, 40))
    ids = s.table["id"].tolist()
    cached = DecodeCache(tmp_path / "cache")
    cached.get(root / "normal" / "b.dicom", (40, 40))
    assert [p.name.split("-")[-1] for p in (tmp_path / "cache").rglob("*.npy")] == ["dicom1.npy"]  # versioned
    assert np.array_equal(x[ids.index("covid/1.2.840.10008.3")], x[ids.index("normal/study1/IM0001")])
    assert np.array_equal(x[ids.index("normal/b.dicom")], fit_to_size(png, (40, 40)))


# --- export ---------------------------------------------------------------------------------------


def test_export_synthetic_reads_back_with_folder_and_csv(tmp_path):
    from benchbox.data.export import GROUP_PATTERN, export_dataset

    syn = samples("synthetic", images=30, patients=12)
    out = tmp_path / "exported-synthetic"
    summary = export_dataset(syn, out, (32, 40), chunk=7)
    assert summary["images"] == 30 and sum(summary["classes"].values()) == 30
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(written) == 30 and {w.split("/")[0] for w in written} == set(syn.classes)
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    assert list(labels.columns) == ["path", "label", "patient", "source"]

    truth = {(row.label, row.group) for row in syn.table.itertuples()}
    by_patient = syn.table.groupby("group")["label"].first().to_dict()
    folder = samples("folder", root=str(out), group_pattern=GROUP_PATTERN)
    csv = samples("csv", file=str(out / "labels.csv"))
    for got in (folder, csv):
        assert len(got.table) == 30 and set(got.classes) == set(syn.classes)
        assert {(row.label, row.group) for row in got.table.itertuples()} == truth
        assert all(by_patient[g] == lab for g, lab in zip(got.table["group"], got.table["label"]))
        assert not any("group" in w or "patient" in w for w in got.warnings)
    assert folder.table.set_index("id")["group"].to_dict() == csv.table.set_index("id")["group"].to_dict()
    # the pixels are the data set's own
    first = syn.table.iloc[[0]]
    rel = labels["path"][0]
    with Image.open(out / rel) as im:
        assert np.array_equal(np.asarray(im), syn.load(first, (32, 40))[0])
    assert not list(tmp_path.glob(".*exporting*"))


def test_export_refuses_a_non_empty_folder(tmp_path):
    from benchbox.data.export import export_dataset

    syn = samples("synthetic", images=12, patients=6)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"out is not empty.*nothing was written"):
        export_dataset(syn, target, (16, 16))
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_dataset(syn, empty, (16, 16))["images"] == 12  # an empty folder is fine


def test_export_failure_leaves_nothing(tmp_path):
    from dataclasses import replace

    from benchbox.data.export import export_dataset

    syn = samples("synthetic", images=12, patients=6)

    def broken(table, size):
        raise DataError("cannot decode image x.png")

    with pytest.raises(DataError, match="x.png"):
        export_dataset(replace(syn, load=broken), tmp_path / "out", (16, 16))
    assert list(tmp_path.iterdir()) == []


# --- the study's plugins: root, split, metadata encoding (issue 13, issue 14) ----------------------


@pytest.fixture
def kermany_copy(tmp_path):
    """A Kermany copy with a train and a test split, outside any data root."""
    base = tmp_path / "elsewhere" / "chest_xray"
    for rel in [
        "train/NORMAL/IM-0117-0001.jpeg",
        "train/PNEUMONIA/person1_bacteria_1.jpeg",
        "train/PNEUMONIA/person2_virus_6.jpeg",
        "test/NORMAL/IM-0001-0001.jpeg",
        "test/PNEUMONIA/person3_bacteria_2.jpeg",
        "test/PNEUMONIA/person4_virus_7.jpeg",
    ]:
        img(base / rel)
    return base


def test_kermany_root_and_split(kermany_copy, tmp_path):
    data_dir = str(tmp_path / "no-data-here")
    test = samples("kermany", data_dir=data_dir, root=str(kermany_copy.parent), split="test")
    assert sorted(test.table["id"]) == [
        "kermany/test/NORMAL/IM-0001-0001.jpeg",
        "kermany/test/PNEUMONIA/person3_bacteria_2.jpeg",
        "kermany/test/PNEUMONIA/person4_virus_7.jpeg",
    ]
    train = samples("kermany", root=str(kermany_copy), split="train")  # the chest_xray folder itself works too
    assert set(train.table["split"]) == {"train"} and len(train.table) == 3
    assert len(samples("kermany", root=str(kermany_copy)).table) == 6  # split = "all"
    assert train.fingerprint != test.fingerprint != samples("kermany", root=str(kermany_copy)).fingerprint
    with pytest.raises(DataError, match="split = 'holdout'.*all, train, test, val"):
        samples("kermany", root=str(kermany_copy), split="holdout")
    shutil.rmtree(kermany_copy / "test")
    with pytest.raises(DataError, match=r"split = 'test'.*holds no test images.*splits present: train"):
        samples("kermany", root=str(kermany_copy), split="test")
    with pytest.raises(DataError, match=r"kermany: root = .*missing.* is not a folder"):
        samples("kermany", root=str(tmp_path / "missing"))


COHEN_HEADER = "patientid,offset,sex,age,finding,view,modality,date,location,folder,filename,doi,url,license\n"


def cohen_checkout(base, rows: list[bytes]):
    base.mkdir(parents=True)
    (base / "metadata.csv").write_bytes(COHEN_HEADER.encode() + b"".join(rows))
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        img(base / "images" / name)
    return base


def test_cohen_root_option_overrides_data_dir(tmp_path):
    base = cohen_checkout(
        tmp_path / "copy" / "covid-chestxray-dataset",
        [
            b"1,0,M,50,COVID-19,PA,X-ray,2020,Rome,images,a.jpg,,,\n",
            b"2,0,M,50,No Finding,PA,X-ray,2020,Rome,images,b.jpg,,,\n",
        ],
    )
    for root in (base.parent, base):  # the data root holding the checkout, or the checkout itself
        s = samples("cohen", data_dir=str(tmp_path / "empty"), root=str(root), labels=["covid", "normal"])
        assert sorted(s.table["id"]) == ["cohen/a.jpg", "cohen/b.jpg"]
    with pytest.raises(DataError, match="metadata.csv is missing"):
        samples("cohen", data_dir=str(tmp_path / "copy"), root=str(tmp_path))  # root wins over --data-dir


def test_dataset_1_root_option(tmp_path, kermany_copy):
    cohen_checkout(
        kermany_copy.parent / "covid-chestxray-dataset", [b"1,0,M,50,COVID-19,PA,X-ray,2020,Rome,images,a.jpg,,,\n"]
    )
    s = samples(
        "dataset_1", data_dir=str(tmp_path / "empty"), root=str(kermany_copy.parent), covid=1, bacterial=2, normal=2
    )
    assert s.table["label"].value_counts().to_dict() == {"bacterial": 2, "normal": 2, "covid": 1}
    assert any("shortfall" in w for w in s.warnings) is False
    short = samples("dataset_1", root=str(kermany_copy.parent), covid=1, bacterial=2, normal=5)
    assert any("shortfall" in w and "normal" in w for w in short.warnings)


def test_cohen_metadata_not_utf8_is_read_losslessly_with_a_warning(tmp_path):
    from benchbox_xray.sources import read_cohen

    base = cohen_checkout(
        tmp_path / "covid-chestxray-dataset",
        [
            "Jos\u00e9,0,M,50,COVID-19,PA,X-ray,2020,Rome,images,a.jpg,,,\n".encode("utf-8"),
            "Ren\u00e9,0,M,50,COVID-19,PA,X-ray,2020,Rome,images,b.jpg,,,\n".encode("cp1252"),
            "Ren\u00ea,0,M,50,COVID-19,PA,X-ray,2020,Rome,images,c.jpg,,,\n".encode("cp1252"),
        ],
    )
    warnings = []
    table, notes = read_cohen(tmp_path, warnings)
    groups = dict(zip(table["id"], table["group"]))
    assert groups["cohen/a.jpg"] == "cohen:Jos\u00e9"  # a UTF-8 line is read as UTF-8
    assert groups["cohen/b.jpg"] == "cohen:Ren\u00e9" and groups["cohen/c.jpg"] == "cohen:Ren\u00ea"
    assert groups["cohen/b.jpg"] != groups["cohen/c.jpg"]  # "replace" would have merged these two patients
    assert len(warnings) == 1 and "line(s) 3, 4" in warnings[0] and str(base / "metadata.csv") in warnings[0]
    s = samples("cohen", root=str(tmp_path))
    assert any("line(s) 3, 4" in w and "Latin-1" in w for w in s.warnings)


# --- registration and the example suite -----------------------------------------------------------


def test_plugins_are_registered_with_typed_defaults(registry):
    for name in ("folder", "csv"):
        entry = registry.datasets[name]
        assert "benchbox" in entry.origin and entry.availability.ok
    folder = registry.datasets["folder"].obj.defaults
    assert folder["classes"] == [] and folder["label_map"] == {} and folder["skip_unreadable"] is False
    assert registry.datasets["kermany"].obj.defaults["split"] == "all"
    for name in ("cohen", "kermany", "dataset_1", "dataset_2"):
        assert registry.datasets[name].obj.defaults["root"] == ""


def test_example_suite_validates(registry):
    from benchbox.define.suite import load_suite
    from conftest import ROOT

    suite = load_suite(ROOT / "suites" / "example-folder.toml", registry)
    (entry,) = suite.datasets.values()
    assert entry.plugin == "folder" and entry.options["root"] == "exported-synthetic"
