"""Readers for the two raw sources of the study, in their ORIGINAL layouts.

- Cohen et al., covid-chestxray-dataset: ``metadata.csv`` + ``images/``.
- Kermany et al. 2018, chest_xray: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg``.

Each reader returns a DataFrame with one row per image: id, path, label (covid, bacterial, viral,
normal, other), finding, group (patient), source, site (hospital/location where known), view,
split. Nothing here decodes pixels.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd

from benchbox.errors import DataError

COHEN_DIR = "covid-chestxray-dataset"
KERMANY_DIR = "chest_xray"
FRONTAL_VIEWS = {"pa", "ap", "ap supine", "ap semi erect", "ap erect"}

VIRAL = ("sars", "mers", "influenza", "varicella", "herpes", "viral", "h1n1", "rsv")
BACTERIAL = (
    "streptococcus",
    "klebsiella",
    "e.coli",
    "e. coli",
    "legionella",
    "mycoplasma",
    "chlamydophila",
    "staphylococcus",
    "nocardia",
    "bacterial",
    "pseudomonas",
    "haemophilus",
)


def cohen_label(finding: str) -> str:
    """Map a ``finding`` of any metadata.csv version to covid/viral/bacterial/normal/other.

    Early versions say ``COVID-19`` or ``COVID-19, ARDS``; later ones are hierarchical, e.g.
    ``Pneumonia/Viral/COVID-19`` or ``Pneumonia/Bacterial/Streptococcus``."""
    f = str(finding).strip().lower()
    if "covid" in f:
        return "covid"
    if f in ("no finding", "normal"):
        return "normal"
    if "/viral" in f or any(v in f for v in VIRAL):
        return "viral"
    if "/bacterial" in f or any(b in f for b in BACTERIAL):
        return "bacterial"
    return "other"  # fungal (Pneumocystis), unspecified pneumonia, ARDS, lipoid, todo


def read_metadata_text(path: Path) -> tuple[str, list[int]]:
    """metadata.csv as text, and the lines (1-based, the header is line 1) that are not UTF-8.

    Those lines are decoded as Latin-1, never with replacement characters: Latin-1 maps each byte
    to its own character, so nothing is lost and two different patient ids or file names stay
    different (U+FFFD would merge them, and a patient could silently join another's group). The
    caller warns with the line numbers, so the user sees exactly which rows were read that way."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(line.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
            bad.append(number)
    return "\n".join(lines), bad


def _cohen_base(root: Path) -> Path:
    """The checkout under the data root, or ``root`` itself when it is the checkout."""
    root = Path(root)
    if not (root / COHEN_DIR).is_dir() and (root / "metadata.csv").is_file():
        return root
    return root / COHEN_DIR


def read_cohen(root: Path, warnings: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Frontal chest X-rays of Cohen's collection, and notes on what was left out.

    ``root`` holds covid-chestxray-dataset/ (or is that folder). What the user must see (rows of
    metadata.csv that are not UTF-8) is appended to ``warnings`` as well as to the notes."""
    base = _cohen_base(root)
    meta_path = base / "metadata.csv"
    if not meta_path.exists():
        raise DataError(
            f"Cohen's covid-chestxray-dataset not found: {meta_path} is missing. Expected layout: "
            f"{base}/metadata.csv and {base}/images/. Run `benchbox data fetch cohen` or place a "
            "checkout of github.com/ieee8023/covid-chestxray-dataset there (see docs/datasets.md)."
        )
    text, latin1_lines = read_metadata_text(meta_path)
    meta = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    meta.columns = [c.strip().lower() for c in meta.columns]
    missing_cols = [c for c in ("patientid", "finding", "filename") if c not in meta.columns]
    if missing_cols:
        raise DataError(f"{meta_path}: missing column(s) {missing_cols}; is this Cohen's metadata.csv?")
    notes = []
    if latin1_lines:
        shown = ", ".join(map(str, latin1_lines[:10])) + (
            f" and {len(latin1_lines) - 10} more" if len(latin1_lines) > 10 else ""
        )
        message = (
            f"{meta_path}: line(s) {shown} are not UTF-8 and were read as Latin-1 (byte for byte, nothing "
            "replaced); check the patient ids and file names on those lines"
        )
        notes.append(message)
        if warnings is not None:
            warnings.append(message)
    n_rows = len(meta)
    if "modality" in meta.columns:
        meta = meta[meta["modality"].str.strip().str.lower().isin(["x-ray", "xray"])]
    else:
        notes.append(
            f"{meta_path}: no 'modality' column (an early version); CT is excluded by the 'folder' column only"
        )
    if "folder" in meta.columns:
        meta = meta[meta["folder"].str.strip().isin(["images", ""])]
    if "view" in meta.columns:
        meta = meta[meta["view"].str.strip().str.lower().isin(FRONTAL_VIEWS)]
    meta = meta.drop_duplicates(subset="filename", keep="first")
    paths = [base / "images" / name for name in meta["filename"]]
    exists = [p.exists() for p in paths]
    absent = [p.name for p, ok in zip(paths, exists) if not ok]
    if absent and len(absent) == len(paths):
        raise DataError(
            f"{base / 'images'}: none of the {len(paths)} images listed in metadata.csv is there "
            f"(e.g. {absent[0]}); place the images/ folder of the repository next to metadata.csv"
        )
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        notes.append(
            f"cohen: {len(absent)} image(s) listed in {meta_path} are missing from {base / 'images'} and were "
            f"left out: {shown}; restore them (`benchbox data verify cohen` lists what differs from the "
            "release), or ignore this if they were removed on purpose"
        )
        if warnings is not None:  # what makes a data set come up short: the user must see which files
            warnings.append(notes[-1])
    meta = meta[exists]
    table = pd.DataFrame(
        {
            "id": "cohen/" + meta["filename"],
            "path": [str(base / "images" / f) for f in meta["filename"]],
            "label": [cohen_label(f) for f in meta["finding"]],
            "finding": meta["finding"].to_numpy(),
            "group": "cohen:" + meta["patientid"].str.strip(),
            "source": "cohen",
            "site": meta["location"].to_numpy() if "location" in meta.columns else "",
            "view": meta["view"].to_numpy() if "view" in meta.columns else "",
            "split": "",
        }
    )
    notes.insert(0, f"cohen: {len(table)} frontal X-ray images selected from {n_rows} metadata rows")
    return table.reset_index(drop=True), notes


KERMANY_NAME = re.compile(r"^(?P<person>person\d+)_(?P<kind>bacteria|virus)_\d+$", re.I)
NORMAL_NAME = re.compile(r"^(?P<patient>(?:NORMAL2-)?IM-\d+)-\d+$", re.I)


def kermany_patient_and_label(folder: str, stem: str) -> tuple[str, str]:
    """(patient, label) from a Kermany file name: personN_bacteria_M / personN_virus_M, or
    IM-XXXX-YYYY / NORMAL2-IM-XXXX-YYYY for normals (the XXXX part names the patient)."""
    if folder.upper() == "PNEUMONIA":
        m = KERMANY_NAME.match(stem)
        if not m:
            raise ValueError(f"unexpected pneumonia file name {stem!r} (want personN_bacteria_M or personN_virus_M)")
        return m["person"].lower(), "bacterial" if m["kind"].lower() == "bacteria" else "viral"
    m = NORMAL_NAME.match(stem)
    return (m["patient"].upper() if m else stem), "normal"


def _kermany_base(root: Path) -> Path | None:
    """chest_xray/ under the data root (the Kaggle zip nests it twice), or ``root`` itself when it
    is that folder."""
    for candidate in (Path(root) / KERMANY_DIR, Path(root) / KERMANY_DIR / KERMANY_DIR, Path(root)):
        if any((candidate / split).is_dir() for split in ("train", "test", "val")):
            return candidate
    return None


def read_kermany(root: Path) -> tuple[pd.DataFrame, list[str]]:
    base = _kermany_base(root)
    if base is None:
        raise DataError(
            f"Kermany's chest_xray not found under {Path(root) / KERMANY_DIR}. Expected layout: "
            f"{Path(root) / KERMANY_DIR}/{{train,test,val}}/{{NORMAL,PNEUMONIA}}/*.jpeg. Run `benchbox "
            "data fetch kermany` or unpack ChestXRay2017.zip there (see docs/datasets.md)."
        )
    rows, odd = [], []
    for split in ("train", "test", "val"):
        for folder in ("NORMAL", "PNEUMONIA"):
            d = base / split / folder
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.suffix.lower() not in (".jpeg", ".jpg", ".png") or p.name.startswith("."):
                    continue
                try:
                    patient, label = kermany_patient_and_label(folder, p.stem)
                except ValueError:
                    odd.append(p.name)
                    continue
                rows.append(
                    {
                        "id": f"kermany/{split}/{folder}/{p.name}",
                        "path": str(p),
                        "label": label,
                        "finding": label,
                        "group": f"kermany:{patient}",
                        "source": "kermany",
                        "site": "Guangzhou Women and Children's Medical Center",
                        "view": "AP",
                        "split": split,
                    }
                )
    if not rows:
        raise DataError(f"{base}: no images in {{train,test,val}}/{{NORMAL,PNEUMONIA}}/")
    notes = [f"kermany: {len(rows)} images from {base}"]
    if odd:
        notes.append(
            f"kermany: {len(odd)} pneumonia file(s) with a name that gives no patient/type were left out "
            f"(e.g. {', '.join(odd[:3])})"
        )
    return pd.DataFrame(rows), notes
