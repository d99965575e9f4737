"""--threads and the busy-machine note: on 2 shared cores, framework thread pools that wait for busy
cores made folds 10-100x slower (docs/performance.md, "Busy machines")."""

from __future__ import annotations

import os

import pytest

from benchbox import environment as envmod


@pytest.fixture
def no_thread_settings(monkeypatch):
    for name in envmod.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_threads_set_every_framework_pool_and_are_recorded(no_thread_settings):
    envmod.set_threads(3)
    assert [os.environ[n] for n in envmod.THREAD_VARIABLES] == ["3", "3", "3", "1"]
    assert envmod.environment()["settings"]["OMP_NUM_THREADS"] == "3"  # the manifest says what ran


def test_a_busy_machine_gets_a_note_naming_the_load_and_the_fix(no_thread_settings, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.7, 1.0, 0.5))
    note = envmod.busy_note()
    assert note and "load average 2.7" in note and "2 cores" in note and "--threads 1" in note
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    assert envmod.busy_note() is None  # an idle machine: nothing to say
    monkeypatch.setattr(os, "getloadavg", lambda: (2.7, 1.0, 0.5))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert envmod.busy_note() is None  # the user chose the threads already
