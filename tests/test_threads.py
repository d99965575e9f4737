"""--threads and the busy-machine note: on 2 shared cores, framework thread pools that wait for busy
cores made folds 10-100x slower (docs/performance.md, "Busy machines")."""

from __future__ import annotations

import os

import pytest

from benchbox.execute import environment as envmod
from test_html_report import stored  # noqa: F401  (the fixture: a hand-written run directory)


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


# --- --threads auto (issue 24) -----------------------------------------------------------------
@pytest.fixture
def machine(monkeypatch, no_thread_settings):
    """A machine of ``cores`` cores, all available, no CPU quota, the given load average (and, with
    ``now``, the cores measured busy at the start)."""

    def set_machine(
        cores: int, load: float, affinity: int | None = None, quota: float | None = None, now: float | None = None
    ):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity or cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(envmod, "cgroup_quota", lambda: quota)
        monkeypatch.setattr(envmod, "busy_cores_now", lambda: now)  # None: not measurable (the load decides)

    monkeypatch.setattr(envmod, "THREADS_CHOSEN", {})
    return set_machine


@pytest.mark.parametrize(
    "cores, load, affinity, quota, threads",
    [
        (2, 0.1, None, None, 2),  # idle: every core
        (2, 1.2, None, None, 1),  # one busy process beside us (the measured case)
        (2, 7.5, None, None, 1),  # overloaded: at least one
        (8, 2.0, None, None, 6),
        (8, 0.0, None, 2.5, 2),  # a CPU quota of 2.5 cores: 2 whole cores
        (64, 32.0, 4, None, 2),  # 4 of 64 cores: the machine's load scaled to our share
    ],
)
def test_auto_sizes_the_pools_to_the_free_cores(machine, cores, load, affinity, quota, threads):
    machine(cores, load, affinity, quota)
    choice = envmod.choose_threads("auto")
    assert choice["threads"] == threads and choice["chosen_by"] == "auto"
    assert os.environ["OMP_NUM_THREADS"] == str(threads) and os.environ["TF_NUM_INTEROP_THREADS"] == "1"
    recorded = envmod.environment()["threads"]  # the manifest says what was chosen, and why
    assert recorded["threads"] == threads and recorded["load_average"] == load and recorded["cpu_quota"] == quota
    assert f": {threads} free" in recorded["why"] and f"load average {load:g}" in recorded["why"]


def test_auto_counts_the_cores_busy_now_not_the_last_minutes_load(machine, monkeypatch):
    """Right after a previous run the load average still counts that run's cores (1.4 on an idle 2-core
    machine): the cores measured busy now decide, both for the threads and for the busy caveat."""
    machine(2, 1.4, now=0.1)
    choice = envmod.choose_threads("auto")
    assert choice["threads"] == 2 and choice["busy_now"] == 0.1 and "0.1 kept busy by other work now" in choice["why"]
    assert envmod.busy_note(choice) is None
    env = {"load_average": 1.4, "cpu_count": 2, "threads": choice, "settings": envmod.settings()}
    assert envmod.busy_start(env) is None
    for name in envmod.THREAD_VARIABLES:  # a new process: nothing chosen yet
        monkeypatch.delenv(name)
    machine(2, 0.2, now=1.0)  # a job that started a moment ago: the load average has not seen it yet
    choice = envmod.choose_threads("auto")
    assert choice["threads"] == 1 and "1 cores busy with other work" in envmod.busy_note(choice)
    env = {"load_average": 0.2, "cpu_count": 2, "threads": choice, "settings": envmod.settings()}
    assert "busy machine (1 cores busy with other work" in envmod.busy_start(env)


def test_cores_busy_now_from_two_readings_of_proc_stat(tmp_path, monkeypatch):
    import time

    stat = tmp_path / "stat"
    readings = iter(["cpu 100 0 100 800 0 0 0 0 0 0\n", "cpu 250 0 100 850 0 0 0 0 0 0\n"])
    stat.write_text(next(readings))
    monkeypatch.setattr(time, "sleep", lambda seconds: stat.write_text(next(readings)))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert envmod.busy_cores_now(stat=str(stat)) == 1.5  # 150 of 200 ticks not idle, on 2 cores
    assert envmod.busy_cores_now(stat=str(tmp_path / "absent")) is None


def test_a_number_overrides_auto_and_auto_keeps_the_users_variables(machine, monkeypatch):
    from benchbox.errors import BenchboxError

    machine(2, 1.5)
    assert envmod.choose_threads("2") == {"threads": 2, "chosen_by": "--threads", "why": "--threads 2"}
    assert os.environ["OMP_NUM_THREADS"] == "2"  # busy or not: the user's number
    for bad in ("0", "-1", "many"):
        with pytest.raises(BenchboxError, match="--threads .*auto"):
            envmod.choose_threads(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert envmod.choose_threads("auto")["chosen_by"] == "environment"
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_threadpoolctl_resizes_the_blas_pools_already_loaded(no_thread_settings):
    import numpy  # noqa: F401  (its BLAS is loaded)
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2):  # two threads to start from; the pools are restored afterwards
        envmod.set_threads(1)
        pools = threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools), pools


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "user" / "job").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu\n")
    (v2 / "user" / "cpu.max").write_text("150000 100000\n")
    (v2 / "user" / "job" / "cpu.max").write_text("max 100000\n")
    assert envmod.cgroup_quota(str(v2), "0::/user/job\n") == 1.5  # the parent's quota binds
    (v2 / "user" / "cpu.max").write_text("max 100000\n")
    assert envmod.cgroup_quota(str(v2), "0::/user/job\n") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert envmod.cgroup_quota(str(v1), "1:cpu:/\n") == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert envmod.cgroup_quota(str(v1), "1:cpu:/\n") is None


def test_the_run_note_says_what_auto_chose_on_a_busy_machine(machine):
    machine(2, 2.7)
    note = envmod.busy_note(envmod.choose_threads("auto"))
    assert note and "load average 2.7" in note and "--threads auto" in note and "1 free" in note
    machine(2, 0.2)
    assert envmod.busy_note(envmod.choose_threads("auto")) is None


def test_report_md_and_html_carry_the_busy_start_caveat(stored):  # noqa: F811
    from benchbox.results.views.html import render_html
    from benchbox.results.views.report import render_markdown

    env = stored.manifest["environment"]
    env.update(load_average=0.3, cpu_count=2, settings={})
    assert "busy machine" not in render_markdown(stored)  # idle: nothing to say
    env.update(load_average=2.4)  # busy, default pools (a run from before --threads auto)
    for text in (render_markdown(stored), render_html(stored)):
        assert "started on a busy machine (load average 2.4, 2 cores)" in text and "not comparable" in text
    env.update(
        settings={"OMP_NUM_THREADS": "1"}, threads={"threads": 1, "chosen_by": "auto", "why": "2 core(s) available"}
    )
    text = render_markdown(stored)
    assert "with 1 framework thread(s) (--threads auto: 2 core(s) available)" in text
    assert "compare them within this run only" in text
