"""Network facts kept in the user cache (benchbox/execute/memo.py): built once, read after, never trusted blindly."""

import os
import sys

import pytest

from benchbox.execute import memo
from conftest import run_cli


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_fact_is_computed_once_then_read_back(cache):
    calls = []

    def build():
        calls.append(1)
        return ({"img_size": (32, 40)}, "map")

    def decode(value):
        extra, mode = value
        return {k: tuple(v) for k, v in extra.items()}, mode

    first = memo.remembered("layout", ["net", 32, 40], build, decode)
    again = memo.remembered("layout", ["net", 32, 40], build, decode)
    assert first == again == ({"img_size": (32, 40)}, "map") and len(calls) == 1
    memo.remembered("layout", ["net", 64, 40], build, decode)  # another question: built
    assert len(calls) == 2
    assert len(list((cache / memo.FOLDER).glob("layout-*.json"))) == 2


def test_a_damaged_or_foreign_file_is_a_miss_and_a_refusal_is_never_kept(cache):
    memo.keep("units", "net", ["a", "b"])
    path = memo.path("units", "net")
    path.write_text("{not json")
    assert memo.remembered("units", "net", lambda: ["c"]) == ["c"]
    path.write_text('{"kind": "other", "value": 1}')
    assert memo.recall("units", "net") is None

    def refuse():
        raise ValueError("cannot take 8x8")

    with pytest.raises(ValueError):
        memo.remembered("units", "small", refuse)
    assert memo.recall("units", "small") is None


def test_other_framework_versions_do_not_see_the_fact(cache, monkeypatch):
    memo.keep("units", "net", ["a"])
    monkeypatch.setattr(memo, "framework_versions", lambda: {"timm": "0.0.1"})
    assert memo.recall("units", "net") is None


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_costs_a_build_not_the_command(cache):
    cache.mkdir()
    cache.chmod(0o500)
    try:
        assert memo.remembered("units", "net", lambda: ["a"]) == ["a"]
    finally:
        cache.chmod(0o700)


def test_validate_builds_a_timm_network_once_then_reads_its_facts(cache, monkeypatch):
    pytest.importorskip("timm")
    from benchbox_torch import family_nets

    family_nets.timm_layout.cache_clear()
    family_nets._unit_names.cache_clear()
    assert family_nets.timm_layout("resnet18", 64, 64) == ({}, "map")
    family_nets.check("timm", "resnet18", {"input_size": [64, 64], "freeze": "none"})
    kept = sorted(p.name.split("-")[0] for p in (cache / memo.FOLDER).glob("*.json"))
    assert kept == ["freeze", "timm"]  # freeze-units-*, timm-layout-*
    family_nets.timm_layout.cache_clear()
    family_nets._unit_names.cache_clear()
    built = []
    real = family_nets._timm_create
    monkeypatch.setattr(family_nets, "_timm_create", lambda *a, **k: built.append(a) or real(*a, **k))
    family_nets.check("timm", "resnet18", {"input_size": [64, 64], "freeze": "none"})
    assert built == []  # both answers read back: no network built
    env = {"BENCHBOX_CACHE": str(cache)}
    info = run_cli("cache", "info", env=env)
    assert info.returncode == 0 and "network facts: 2 " in info.stdout, info.stdout
    mixed = run_cli("cache", "clear", "--networks", "--timings", env=env)
    assert mixed.returncode == 1 and "without --encoder/--timings" in mixed.stderr and "Traceback" not in mixed.stderr
    assert len(list((cache / memo.FOLDER).glob("*.json"))) == 2  # nothing removed by the refused command
    res = run_cli("cache", "clear", "--networks", env=env)
    assert res.returncode == 0 and "removed 2 network fact(s)" in res.stdout
    assert not list((cache / memo.FOLDER).glob("*.json"))
