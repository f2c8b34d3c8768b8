"""``--spqr-device=auto``: xdist worker gwN takes GPU N mod count; CPU workers share cores."""

from __future__ import annotations

import pytest
import torch

from pytest_spqr.settings import resolve_device, resolve_threads, worker_index


@pytest.mark.parametrize(("worker", "gpus", "expected"),
                         [(None, 2, "cuda:0"), ("gw0", 2, "cuda:0"), ("gw3", 2, "cuda:1"),
                          ("gw5", 4, "cuda:1"), ("gw1", 0, "cpu")])
def test_auto_device_follows_the_worker(monkeypatch, worker, gpus, expected) -> None:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setattr("pytest_spqr.settings._no_cuda_driver", lambda: False)  # a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_device("auto") == expected


def test_without_a_cuda_driver_auto_is_cpu_and_torch_is_not_asked(monkeypatch) -> None:
    monkeypatch.setattr("pytest_spqr.settings._no_cuda_driver", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was asked"))
    assert resolve_device("auto") == "cpu"


def test_cpu_threads_reach_torch_whether_or_not_it_is_imported(monkeypatch) -> None:
    from pytest_spqr.settings import use_cpu_threads

    before = torch.get_num_threads()
    try:
        use_cpu_threads(1)  # torch is imported here: set directly
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.delitem(__import__("sys").modules, "torch")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    use_cpu_threads(3)  # not imported: through the variable torch reads at import
    assert __import__("os").environ["OMP_NUM_THREADS"] == "3"


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


def test_devices_option_picks_the_gpus_workers_take_turns_on(monkeypatch) -> None:
    from pytest_spqr.core.errors import SpqrConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for worker, expected in (("gw0", "cuda:1"), ("gw1", "cuda:3"), ("gw2", "cuda:1")):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        assert resolve_device("auto", (1, 3)) == expected
    with pytest.raises(SpqrConfigError, match=r"this machine has 4 CUDA device\(s\) \(0–3\); drop 7"):
        resolve_device("auto", (1, 7))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpqrConfigError, match="names GPUs, but CUDA is not available"):
        resolve_device("auto", (0,))


def test_devices_option_is_validated(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--spqr-devices=0,x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--spqr-devices*'0,x': use CUDA device numbers, e.g. 0,1,3*"])


def test_no_cache_uses_a_temporary_folder(pytester: pytest.Pytester, tiny_sd) -> None:
    pytester.makepyfile("""
        def test_where(spqr_session):
            print("cache", spqr_session.settings.run.cache_dir)
    """)
    result = pytester.runpytest_subprocess(f"--spqr-model={tiny_sd}", "--spqr-no-cache", "-s")
    result.assert_outcomes(passed=1)
    line = next(x for x in result.outlines if x.startswith("test_") or "cache /" in x)
    folder = line.split("cache ", 1)[1].split()[0]
    assert "spqr-no-cache-" in folder and not __import__("os").path.exists(folder)  # removed at exit
    both = pytester.runpytest_subprocess(f"--spqr-model={tiny_sd}", "--spqr-no-cache", "--spqr-cache-dir=x")
    both.stderr.fnmatch_lines(["*--spqr-no-cache and --spqr-cache-dir contradict each other*"])
