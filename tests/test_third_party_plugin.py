"""A third party's plugin, pip-installed from its own distribution, is discovered through the
`benchbox` entry-point group, runs in a suite and passes the conformance kit."""

import os

import pytest

from conftest import needs_torch, pip_install_into, run_cli, tiny_suite

pytestmark = pytest.mark.slow  # pip-installs a package and trains


@pytest.fixture
def installed(example_site):
    return example_site


def env_with(target):
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_listed_with_origin_and_unavailable_one_does_not_break_others(installed):
    res = run_cli("plugins", env=env_with(installed))
    assert res.returncode == 0, res.stderr
    line = next(l for l in res.stdout.splitlines() if "example/tiny_cnn" in l)
    assert "benchbox-example-plugin 0.1.0" in line
    jax = next(l for l in res.stdout.splitlines() if "example/needs_jax" in l)
    assert "no" in jax and "jax_is_not_installed_here" in res.stdout
    assert "keras/mobilenet_v2" in res.stdout  # the others still load


@needs_torch
def test_runs_in_a_suite(installed, tmp_path):
    suite = tiny_suite(tmp_path, '[backbones.tiny]\nplugin = "example/tiny_cnn"\nchannels = 4\n')
    res = run_cli("run", suite, env=env_with(installed))
    assert res.returncode == 0, res.stderr
    assert "tiny" in res.stdout and "Sensitivity" in res.stdout


def test_unavailable_plugin_in_a_suite_is_a_clear_error(installed, tmp_path):
    suite = tiny_suite(tmp_path, '[backbones.j]\nplugin = "example/needs_jax"\n')
    res = run_cli("run", suite, env=env_with(installed))
    assert res.returncode == 1 and "unavailable" in res.stderr and "pip install" in res.stderr


@needs_torch
def test_passes_the_conformance_kit(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    from benchbox.plugins import load_registry
    from benchbox.testing import check_backbone

    check_backbone(load_registry().get("backbone", "example/tiny_cnn"), options={"channels": 4})


def test_scaffolded_plugin_installs_and_is_discovered(tmp_path):
    res = run_cli("plugin", "new", "resnet", "--dir", tmp_path)
    assert res.returncode == 0, res.stderr
    pkg = tmp_path / "benchbox-resnet"
    assert (pkg / "tests" / "test_conformance.py").exists()
    site = pip_install_into(pkg, tmp_path / "site")
    res = run_cli("plugins", env=env_with(site))
    assert "resnet/resnet50" in res.stdout and "benchbox-resnet 0.1.0" in res.stdout
    again = run_cli("plugin", "new", "resnet", "--dir", tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
