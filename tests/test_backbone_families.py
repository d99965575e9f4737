"""Backbone families: PREFIX/MODEL names resolved on demand, listed, and suggested when misspelt."""

from __future__ import annotations

from benchbox import hookimpl
from benchbox.cli import main
from benchbox.contracts import Availability, Backbone, BackboneFamily
from benchbox.plugins import load_registry


class Toy(Backbone):
    framework = "toy"
    defaults = {"input_size": [32, 32]}

    def __init__(self, name):
        self.name = name


class ToyFamily(BackboneFamily):
    prefix, framework, description = "toy", "toy", "toy networks"
    built: list[str] = []

    def models(self):
        return ["convnext_atto", "convnext_nano", "resnet18"]

    def backbone(self, model):
        if model not in self.models():
            return None
        self.built.append(model)
        return Toy(f"toy/{model}")


class MissingFamily(ToyFamily):
    prefix = "gone"

    def availability(self):
        return Availability(False, "needs gonelib: pip install gonelib")


class Plugin:
    @hookimpl
    def benchbox_backbone_families(self):
        return [ToyFamily(), MissingFamily()]


def test_a_family_member_resolves_only_when_named():
    ToyFamily.built.clear()
    registry = load_registry([Plugin()])
    assert ToyFamily.built == []
    assert "toy/resnet18" in registry.backbones and "toy/resnet19" not in registry.backbones
    assert registry.get("backbone", "toy/resnet18").name == "toy/resnet18"
    assert ToyFamily.built == ["resnet18"]  # built once, then kept
    assert "toy/resnet18" not in [n for n in registry.backbones if n.startswith("toy/convnext")]


def test_unknown_member_names_the_closest_ones():
    registry = load_registry([Plugin()])
    try:
        registry.get("backbone", "toy/convnext_attto")
    except Exception as exc:
        assert "did you mean toy/convnext_atto" in str(exc)
    else:
        raise AssertionError("an unknown family member must be refused")


def test_a_member_of_an_unavailable_family_says_what_to_install():
    registry = load_registry([Plugin()])
    try:
        registry.get("backbone", "gone/anything")
    except Exception as exc:
        assert "pip install gonelib" in str(exc)
    else:
        raise AssertionError("an unavailable family must be refused")


def test_backbones_list_filters_by_framework_and_pattern(capsys, monkeypatch):

    # the CLI loads the registry once per command, through benchbox.plugins.load_registry
    monkeypatch.setattr("benchbox.plugins.load_registry", lambda *a, **k: load_registry([Plugin()]))
    try:
        main(["backbones", "list", "--framework", "toy", "--filter", "convnext*"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out.split()
    assert out == ["toy/convnext_atto", "toy/convnext_nano"]
    try:
        main(["backbones", "list", "--framework", "toy", "--filter", "nothing-like-this*"])
    except SystemExit as exc:
        assert exc.code == 1
    assert "no backbone matches" in capsys.readouterr().err
