"""device.py: how many threads a CPU job uses."""

from __future__ import annotations

from crossrec_core.device import cpu_threads


def test_cpu_threads_follow_the_affinity_omp_and_crossrec_settings(monkeypatch):
    monkeypatch.delenv("CROSSREC_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert cpu_threads() == 3  # the cores this process may run on, not the machine's
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert cpu_threads() == 3
    monkeypatch.setenv("CROSSREC_THREADS", "2")
    assert cpu_threads() == 2
