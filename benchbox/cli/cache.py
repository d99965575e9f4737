"""`benchbox cache info|clear`: the embedding cache of the frozen schemes (benchbox/execute/embeddings.py)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from benchbox.cli.common import app, console, esc

cache_app = typer.Typer(
    rich_markup_mode=None,
    help="The embedding cache: frozen encoders' features of each image (linear-probe and knn schemes).",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@cache_app.command("info")
def cache_info() -> None:
    """Where the cache is, its size limit, and one row per encoder: images cached, bytes, last write."""
    from benchbox.execute.embeddings import EmbeddingCache

    cache = EmbeddingCache()
    rows = cache.info()
    total = sum(r["bytes"] for r in rows)
    console.print(
        f"embedding cache: {esc(str(cache.root))} ({_size(total)} of a {_size(cache.limit)} limit; "
        "BENCHBOX_CACHE moves it, BENCHBOX_EMBED_CACHE_LIMIT sets the limit, BENCHBOX_EMBED_CACHE=off turns it off)"
    )
    from benchbox.execute import memo

    facts = memo.kept()
    console.print(
        f"network facts: {len(facts)} ({_size(sum(size for _, size in facts))}) in {esc(str(memo.folder()))} "
        "(input layouts, freeze modules, layer names; `benchbox cache clear --networks` forgets them)"
    )
    if not rows:
        console.print("no cached features")
        return
    table = Table(show_lines=False)
    for col in ("Encoder", "Weights", "Input", "Dim", "Images", "Size", "Last written", "Key"):
        table.add_column(col, no_wrap=col in ("Encoder", "Key"))
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_written"])) if r["last_written"] else ""
        size = "x".join(str(v) for v in r["input_size"]) if isinstance(r["input_size"], list) else str(r["input_size"])
        table.add_row(
            esc(str(r["encoder"])),
            esc(str(r["weights"])[:24]),
            size,
            str(r["dimension"]),
            str(r["images"]),
            _size(r["bytes"]),
            when,
            r["key"],
        )
    console.print(table)


@cache_app.command("clear")
def cache_clear(
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="Only this encoder's features: a backbone name (timm/resnet18) or a key from `info`."
    ),
    timings: bool = typer.Option(
        False,
        "--timings",
        help="Only the encoders' kept inference times (the next run times each encoder again); keep the features.",
    ),
    networks: bool = typer.Option(
        False,
        "--networks",
        help="Only what builds of the networks told the checks (layer names, input layouts, freeze modules; "
        "rebuilt on the next validate), e.g. after editing a backbone plugin; keep the features.",
    ),
) -> None:
    """Remove cached features (all, or one encoder's); they are recomputed when a run needs them."""
    from benchbox.execute.embeddings import EmbeddingCache

    if networks:
        from benchbox.errors import BenchboxError
        from benchbox.execute import memo

        if encoder is not None or timings:
            raise BenchboxError(
                "cache clear: --networks forgets what builds of the networks told the checks and touches no "
                "features or timings; run it without --encoder/--timings, and those in a second command"
            )
        removed, freed = memo.forget()
        console.print(f"removed {removed} network fact(s), {_size(freed)} ({esc(str(memo.folder()))})")
        return
    removed, freed = EmbeddingCache().clear(encoder, timings_only=timings)
    what = "encoder timing(s)" if timings else "encoder(s)"
    console.print(f"removed {removed} {what}, {_size(freed)}")
