"""The freeze option: one meaning in both engines (plugins/benchbox_engine_common/freeze.py)."""

from __future__ import annotations

import pytest

from benchbox.errors import BenchboxError
from benchbox_engine_common.freeze import freeze_problem, frozen_count, module_names, parse_freeze

UNITS = ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer2.0.conv1", "layer2.0.bn1", "fc"]


@pytest.mark.parametrize(
    "value, count",
    [("none", 0), ("all", 7), (0, 0), (1, 7), (0.5, 4), ("layer1", 4), ("layer2.0.conv1", 5), ("bn1", 2)],
)
def test_each_form_freezes_the_expected_leading_units(value, count):
    assert frozen_count(parse_freeze(value), UNITS) == count


def test_an_unknown_layer_lists_the_closest_names():
    with pytest.raises(BenchboxError, match=r"no layer or module named 'layer5'.*did you mean .*layer1"):
        frozen_count(parse_freeze("layer5"), UNITS, "timm/resnet18")


@pytest.mark.parametrize("bad", [1.5, -0.1, "", True, [1], float("nan")])
def test_values_that_mean_nothing_are_refused_before_any_network_is_built(bad):
    assert freeze_problem(bad)


def test_module_names_are_what_a_user_may_type():
    assert module_names(UNITS) == ["conv1", "bn1", "layer1", "layer1.0", "layer2", "layer2.0", "fc"]
