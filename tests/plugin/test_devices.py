"""``--spqr-device=auto``: xdist worker gwN takes GPU N mod count; CPU workers share cores."""

from __future__ import annotations

import pytest
import torch

from pytest_spqr.session import resolve_device, resolve_threads, worker_index


@pytest.mark.parametrize(("worker", "gpus", "expected"),
                         [(None, 2, "cuda:0"), ("gw0", 2, "cuda:0"), ("gw3", 2, "cuda:1"),
                          ("gw5", 4, "cuda:1"), ("gw1", 0, "cpu")])
def test_auto_device_follows_the_worker(monkeypatch, worker, gpus, expected) -> None:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_device("auto") == expected


def test_explicit_device_is_kept() -> None:
    assert resolve_device("cuda:3") == "cuda:3"
    assert resolve_device("cpu") == "cpu"


def test_worker_index_without_xdist(monkeypatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_index() == 0


def test_cpu_threads_are_shared_between_workers(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert resolve_threads("auto") == 2
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
    assert resolve_threads("auto") == 1
    assert resolve_threads(3) == 3
