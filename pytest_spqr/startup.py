"""Start-up checks of what the resolved settings point at: the folders the run writes
into, the device, the model files and an explicitly named CLIP.

Each would otherwise be found late: every test failing with the same traceback (a cache
folder that is a file, ``cuda:7`` on a one-GPU machine, a truncated weights file), or the
whole suite running before the results are lost (a report folder that cannot be written).
Nothing here loads a model or, unless CUDA is asked for, imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.folders import check_writable_folder
from pytest_spqr.models.folder_checks import check_model_files
from pytest_spqr.settings import SpqrSettings, _no_cuda_driver, resolve_device


def check_startup(settings: SpqrSettings, given: dict[str, Any]) -> None:
    """Raise a one-line :class:`SpqrConfigError` for the first problem found."""
    check_model_config_applies(settings, given)
    for source in settings.models:
        check_model_files(source, allow_pickle=settings.run.allow_pickle)
    check_places(settings, given)
    check_device(settings.run.device)
    if settings.devices and settings.run.device == "auto":
        resolve_device("auto", settings.devices)  # each named GPU is there
    if settings.sources.get("clip") not in (None, "default"):
        from pytest_spqr.models.clip import clip_folder

        clip_folder(settings.clip)  # named on purpose, so its absence is a mistake


def check_model_config_applies(settings: SpqrSettings, given: dict[str, Any]) -> None:
    """``--spqr-model-config`` configures single checkpoint files; a folder brings its own."""
    if "model_config" not in given or not settings.models:
        return
    if not any(m.kind == "single_file" for m in settings.models):
        first = settings.models[0]
        raise SpqrConfigError(
            "--spqr-model-config applies to single .safetensors checkpoints only, and "
            f"{first.spec} is a pipeline folder (its own model_index.json and configs are "
            "used) — drop --spqr-model-config"
        )


def check_places(settings: SpqrSettings, given: dict[str, Any]) -> None:
    """The report folder and the cache folder can be written (or created)."""
    report = given.get("report")
    if report is not None:
        check_writable_folder(
            Path(report), where=f"--spqr-report={report}",
            fix="pass --spqr-report=DIR, a folder you can write (created if missing)",
        )
    if given.get("no_cache"):
        return  # a fresh temporary folder
    if given.get("cache_dir"):
        where = f"--spqr-cache-dir={given['cache_dir']}"
    elif settings.models:
        where = f"the cache folder {settings.run.cache_dir} (default: .spqr in the rootdir)"
    else:
        return  # nothing will be cached: do not ask of a project that it be writable
    check_writable_folder(
        settings.run.cache_dir, where=where,
        fix="pass --spqr-cache-dir=DIR, a folder you can write (created if missing), or "
        "--spqr-no-cache",
    )


def check_device(device: str) -> None:
    """``cuda``/``cuda:N`` needs a CUDA driver and, for N, that many devices; ``mps`` macOS.

    Where there is no driver this is decided from the device files, without importing
    torch (see :func:`pytest_spqr.settings._no_cuda_driver`)."""
    head, _, index = device.partition(":")
    where = f"--spqr-device={device}"
    if head == "mps" and sys.platform != "darwin":
        raise SpqrConfigError(f"{where}: mps is Apple's GPU backend, on macOS only — pass "
                              "--spqr-device=cpu, cuda or auto")
    if head != "cuda":
        return
    if _no_cuda_driver():
        raise SpqrConfigError(f"{where}: no CUDA driver on this machine — pass "
                              "--spqr-device=cpu (or auto, which picks cpu here)")
    import torch

    if not torch.cuda.is_available():
        raise SpqrConfigError(
            f"{where}: CUDA is not available to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda or 'none: a CPU build'}) — install a CUDA build of torch or "
            "pass --spqr-device=cpu"
        )
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise SpqrConfigError(
            f"{where}: this machine has {count} CUDA device(s) (cuda:0–cuda:{count - 1}) — "
            "pass one of them, or --spqr-device=auto"
        )
