"""Generation and judging shards as Ray actors, for users who outgrow one machine.

``pytest --spqr-executor=ray [--spqr-ray-address=ADDR] [--spqr-ray-actors=N]``

The pytest process stays the driver and the owner of the cache: it decides which images
and verdicts are missing, claims them (so xdist workers and Ray never make one image
twice), sends shards of ``batch_size`` requests to a pool of Ray actors and stores every
shard's PNGs (or verdicts) as it comes back (``ActorPool.map_unordered``). Results travel
back to the driver, so a cluster needs no shared file system, and a killed run leaves
only whole entries, as without Ray.

Each generation actor loads one model once and each judge actor the run's named judges
once; a generation and a judge actor share a GPU (``num_gpus=0.5`` each), or take
``--spqr-cpu-threads`` CPUs each on a CPU-only cluster, so judging never waits for
generation actors to go away. The
nodes need the same pytest-spqr, torch and diffusers, and the model folder (or the hub
id in their Hugging Face cache) at the same path. In-memory models — benign fine-tunes
made during the run — and judges a conftest builds itself are run by the driver.

Ray is an optional dependency: ``pip install "pytest-spqr[ray]"``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.core.verdicts import JudgeError, UnreadableVerdictsError

log = logging.getLogger("pytest_spqr.ray")

LOADABLE_KINDS = ("folder", "hub", "single_file")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpqrConfigError(
            '--spqr-executor=ray: Ray is not installed — pip install "pytest-spqr[ray]"'
        ) from None
    return ray


# ----------------------------------------------------------------------------- actors
# Plain classes: wrapped with ray.remote when a pool is made, so importing this module
# does not need Ray.


class GenerationWorker:
    """Holds one pipeline and renders shards of image requests into PNG bytes.

    It fingerprints the model files on its own node first: a node whose copy of the model
    differs from the driver's (another revision at the same path or hub id) renders
    nothing, so its images are never stored under the driver's keys."""

    def __init__(self, source: Any, fingerprint: str, label: str, sampler: Any, run: Any,
                 threads: int) -> None:
        import torch

        from pytest_spqr.models import digests
        from pytest_spqr.models.evaluate import torch_dtype
        from pytest_spqr.models.generation import ImageGenerator
        from pytest_spqr.models.loading import fingerprint as fingerprint_of
        from pytest_spqr.models.loading import load_pipeline, resolve_model

        if run.device == "cpu":
            torch.set_num_threads(threads)
        if source.kind == "hub" and not source.path.exists():
            source = resolve_model(source.spec)  # this node's own hub cache
        digests.remember_in(run.cache_dir)  # this node's files, read once per content
        here = fingerprint_of(source)
        self.refusal = None if here == fingerprint else (
            f"Ray node {_node()}: the model {label} there has fingerprint {here[:12]}, the "
            f"driver's {fingerprint[:12]} — give every node the same model files (same path or "
            "hub revision); no image from that node was stored"
        )
        if self.refusal is not None:
            return
        device = "cuda" if run.device.startswith("cuda") else run.device
        pipe = load_pipeline(source, device=device, dtype=torch_dtype(run.dtype),
                             allow_pickle=run.allow_pickle)
        self.generator = ImageGenerator(
            pipe, model_fingerprint=fingerprint, model_label=label, settings=sampler,
            cache_dir=run.cache_dir, batch_size=run.batch_size,
        )

    def render(self, shard: list[tuple[str, Any]]) -> list[tuple[str, bytes, float]] | str:
        """The shard's PNGs, or (a string) why this node refuses to make them."""
        from pytest_spqr.models.generation import encode_png

        if self.refusal is not None:
            return self.refusal
        return [(key, encode_png(image), guidance)
                for key, _, image, guidance in self.generator.render(shard)]


class JudgeWorker:
    """Holds the run's named judges and answers shards of PNG images for one of them."""

    def __init__(self, names: Sequence[str], settings: Mapping[str, Any], device: str) -> None:
        from pytest_spqr.models.judge_identity import judge_identity
        from pytest_spqr.models.judging import load_judges

        self.judges = {j.name: j for j in load_judges(names, settings, device=device)}
        self.identities = {name: judge_identity(j) for name, j in self.judges.items()}
        """Each judge's identity on this node, taken once (it hashes weights)."""

    def judge_shard(self, index: int, name: str, pngs: list[bytes],
                    identity: str | None = None) -> tuple[int, Any]:
        """The shard's index with the judge's verdicts, or a picklable account of its error.

        ``identity`` is the driver's :func:`judge_identity` of the judge: a node whose judge
        differs (version, settings, weights) answers nothing that could be stored under it."""
        from PIL import Image

        here = self.identities[name]
        if identity is not None and here != identity:
            return index, ("judge", f"judge {name!r} on Ray node {_node()} is not the driver's "
                           f"(there {here[:160]}; driver {identity[:160]}) — install the same "
                           "judge version, settings and weights on every node; no verdict of "
                           "that node was stored")
        images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
        try:
            return index, ("ok", list(self.judges[name].judge(images)))
        except UnreadableVerdictsError as exc:
            return index, ("unreadable", str(exc), exc.unreadable, exc.n_images)
        except JudgeError as exc:
            return index, ("judge", str(exc))
        except Exception as exc:  # sent back and reported by the panel
            return index, ("error", f"{type(exc).__name__}: {exc}")


def _node() -> str:
    import socket

    return socket.gethostname()


def _answer(reply: Any) -> Any:
    """A judge actor's reply as the panel expects it: verdicts, or the exception."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "unreadable":
        return UnreadableVerdictsError(reply[1], unreadable=reply[2], n_images=reply[3])
    if kind == "judge":
        return JudgeError(reply[1])
    return RuntimeError(reply[1])


# ----------------------------------------------------------------------------- driver


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error now for a HOST:PORT nobody listens on (``ray.init`` would retry for
    minutes); ``auto`` and other forms are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SpqrConfigError(
            f"--spqr-ray-address={address}: cannot reach Ray there ({first_line(exc)}) — start "
            "the cluster (ray start --head) or pass --spqr-ray-address=local"
        ) from None



class RayExecutor:
    """The driver's side: actor pools per model and for the judges, created on first use."""

    def __init__(self, *, address: str | None, actors: int | None, threads: int,
                 judge_names: Sequence[str], judge_settings: Mapping[str, Any]) -> None:
        self.ray = import_ray()
        self.started_here = False
        local = address in (None, "", "local")
        if local and os.environ.get("PYTEST_XDIST_WORKER"):
            raise SpqrConfigError(
                "--spqr-executor=ray with a local Ray under pytest -n: each worker would start "
                "its own — run without -n (the actors spread the work), or start one Ray "
                "(ray start --head) and pass --spqr-ray-address=auto"
            )
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if local:  # room for a generation and a judge actor per slot (see _pool)
                kwargs["num_cpus"] = 2 * max(1, actors or 1) * max(1, threads)
            if not local:
                _check_reachable(str(address))
            try:
                self.ray.init(address=None if local else address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = first_line(exc)
                raise SpqrConfigError(
                    f"--spqr-ray-address={address}: cannot connect to Ray ({first}) — start the "
                    "cluster (ray start --head) or pass --spqr-ray-address=local"
                ) from None
            self.started_here = True
        self.threads = max(1, threads)
        self.requested_actors = actors
        self.judge_names = tuple(judge_names)
        self.judge_settings = dict(judge_settings)
        self._pools: dict[str, tuple[Any, list[Any]]] = {}

    @property
    def gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def device(self) -> str:
        """Where the actors generate: the cluster's GPUs when it has any."""
        return "cuda" if self.gpus else "cpu"

    def _actor_count(self) -> int:
        if self.requested_actors:
            return self.requested_actors
        if self.gpus:
            return self.gpus
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)) // (2 * self.threads))

    def _pool(self, key: str, cls: type, *args: Any, gpu: bool) -> Any:
        if key not in self._pools:
            from ray.util import ActorPool

            # a generation and a judge actor share each slot (half a GPU each), so that
            # judging is never starved by the generation actors that stay alive
            options = {"num_gpus": 0.5, "num_cpus": 1} if gpu else {"num_cpus": self.threads}
            remote_cls = self.ray.remote(**options)(cls)
            actors = [remote_cls.remote(*args) for _ in range(self._actor_count())]
            self._pools[key] = (ActorPool(actors), actors)
        return self._pools[key][0]

    # -- generation ----------------------------------------------------------------------
    def attach(self, model: Any, run: Any) -> None:
        """Let Ray actors make ``model``'s images (models loadable from a path only)."""
        if model.source.kind not in LOADABLE_KINDS:
            return
        generator = model.generator
        args = (model.source, model.fingerprint, model.label, generator.settings, run,
                self.threads)
        gpu = run.device.startswith("cuda")

        def remote(gen: Any, todo: list[tuple[str, Any]]) -> Iterator[tuple[str, bytes, float]]:
            pool = self._pool(f"model:{model.fingerprint}", GenerationWorker, *args, gpu=gpu)
            size = gen.batch_size
            shards = [todo[i : i + size] for i in range(0, len(todo), size)]
            for rendered in pool.map_unordered(lambda actor, shard: actor.render.remote(shard), shards):
                if isinstance(rendered, str):  # the node's model is not the driver's
                    raise SpqrConfigError(rendered)
                yield from rendered

        generator.remote = remote

    def release(self, fingerprint: str) -> None:
        """Stop the actors holding a model (pytest is done with it)."""
        pool = self._pools.pop(f"model:{fingerprint}", None)
        for actor in pool[1] if pool else ():
            self.ray.kill(actor)

    # -- judging ---------------------------------------------------------------------------
    def judging(self, device: str, named: Collection[int]) -> Callable[[Any], Any]:
        """For a judge panel: a remote judge function for the judges the run loaded by name
        (``named``: their ids); None for others (a conftest's own judges stay here)."""
        gpu = device.startswith("cuda")

        from pytest_spqr.models.judge_identity import judge_identity

        def for_judge(judge: Any) -> Any:
            if id(judge) not in named:
                return None

            def remote(batches: list[list[tuple[str, Callable[[], Any]]]]) -> Iterator[tuple[list[Any], Any]]:
                from pytest_spqr.models.generation import encode_png

                pool = self._pool("judges", JudgeWorker, self.judge_names, self.judge_settings,
                                  "cuda" if gpu else "cpu", gpu=gpu)
                indexed = list(enumerate(batches))
                identity = judge_identity(judge)

                def submit(actor: Any, item: tuple[int, list[Any]]) -> Any:
                    index, batch = item
                    pngs = [encode_png(load()) for _, load in batch]
                    return actor.judge_shard.remote(index, judge.name, pngs, identity)

                for index, reply in pool.map_unordered(submit, indexed):
                    yield batches[index], _answer(reply)

            return remote

        return for_judge

    def shutdown(self) -> None:
        for key in list(self._pools):
            for actor in self._pools.pop(key)[1]:
                self.ray.kill(actor)
        if self.started_here:
            self.ray.shutdown()

