"""Write the per-file content manifest benchbox ships for a data source.

Run by a maintainer who holds the ORIGINAL data at the pinned version (the Cohen repository at the
commit in plugins/benchbox_xray/fetch.py, Kermany's ChestXRay2017.zip from Mendeley Data v2),
e.g. right after `benchbox data fetch cohen --data-dir DIR` on a machine with a network:

    python tools/make_data_manifest.py cohen --data-dir DIR
    python tools/make_data_manifest.py kermany --data-dir DIR
    benchbox data verify --data-dir DIR        # must now report OK with every file hashed

It hashes (SHA-256) every file under <DIR>/<source folder> (a .git folder is left out) and writes
plugins/benchbox_xray/manifest-<source>.json (or -o PATH). Never run it on a downscaled or edited
copy such as ../shared/data: the manifest must describe the published bytes, or every user's
verification fails (or, worse, passes on the wrong data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from benchbox_xray.fetch import SOURCES
    from benchbox_xray.manifest import make_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", choices=sorted(SOURCES))
    ap.add_argument("--data-dir", required=True, type=Path, help="data root holding the original source")
    ap.add_argument("-o", "--output", type=Path, help="where to write (default: the shipped manifest)")
    ap.add_argument("--version", help="what the data is (default: the version the source pins)")
    args = ap.parse_args(argv)

    src = SOURCES[args.source]
    base = src.locate(args.data_dir)
    problems = src.layout_problems(base) if base.is_dir() else [f"{src.folder}/"]
    if problems:
        print(
            f"{base}: not the {src.name} layout (missing: {', '.join(problems)}); expected {src.layout}",
            file=sys.stderr,
        )
        return 1
    manifest = make_manifest(base, src.name, src.folder, args.version or src.version)
    out = args.output or src.manifest_path
    out.write_text(manifest.to_json(), encoding="utf-8")
    print(f"{out}: {len(manifest.files)} files of {base} ({manifest.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
