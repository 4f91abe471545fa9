"""Running the costly command lines on more than one laptop's cores: where images are decoded and
where the model runs (``--device``, ``--workers``, ``--ray``, ``--ray-address``).

Locally, decoding and letterboxing run in torch DataLoader worker processes (``--workers N``) or,
by default, in one prefetch thread. With ``--ray``, Ray Data reads and decodes the images in
parallel tasks and scores them in an actor pool (``map_batches`` with a class): each actor
receives the model once, through Ray's object store (with the onnx backend, its exported graph's
bytes), so a cluster's nodes need the code and the data but not the weights folder. Batches are
formed exactly as in the single-process path (the same files, in the same groups of
``batch_size``), so the probabilities are the same numbers and the caller writes the same files
through the same atomic writer.

Ray is optional (``pip install .[scale]`` or ``requirements-scale.txt``): it is imported only
when ``--ray`` or ``--ray-address`` is given, and a missing install is one sentence.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.data.imaging import load_radiograph
from core.data.preprocess import letterbox, to_model_input
from core.model.backends import DEFAULT_BACKEND, OnnxPredictor
from core.model.checkpoint import LoadedModel
from core.model.devices import autocast, on_device, resolve_device
from core.model.prediction import predict_batch_outputs

__all__ = [
    "Engine",
    "LOCAL",
    "ScaleError",
    "Decoder",
    "local_batches",
    "import_ray",
    "ray_session",
    "ray_probabilities",
    "ray_map",
    "received",
]

Locate = Callable[[Path, str], Path]


class ScaleError(RuntimeError):
    """Ray is missing, cannot start or reach its cluster, or a remote task failed (one sentence)."""


@dataclass(frozen=True)
class Engine:
    """Where a command line decodes images and runs its model."""

    device: str = "cpu"
    precision: str = "fp32"
    #: DataLoader worker processes that decode and letterbox (0: one prefetch thread).
    workers: int = 0
    #: Run on Ray: an embedded local instance when ``ray_address`` is None.
    ray: bool = False
    ray_address: str | None = None
    #: Scoring actors (None: one per GPU with --device cuda, else one per two CPUs of the cluster).
    actors: int | None = None
    #: What runs the forward passes (core.model.backends): onnx (ONNX Runtime, on a CPU) or torch.
    backend: str = DEFAULT_BACKEND

    @property
    def torch_device(self) -> torch.device:
        """The checked torch device (raises core.model.devices.DeviceError when absent)."""
        return resolve_device(self.device, self.precision)


#: The default: this process, on the CPU, one prefetch thread (what core.evaluate always did).
LOCAL = Engine()


@dataclass(frozen=True)
class Decoder:
    """Files -> letterboxed uint8 canvases -> the model's input: core.model.prediction.model_inputs for
    files, picklable so DataLoader workers and Ray tasks run the very same steps."""

    root: Path
    locate: Locate
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, loaded: LoadedModel, root: Path, locate: Locate) -> Decoder:
        """The decoder for ``loaded``'s input size and normalisation."""
        return cls(root, locate, loaded.input_size, loaded.config.mean, loaded.config.std)

    def canvases(self, files: list[str]) -> torch.Tensor:
        """(N, 1, S, S) uint8: what travels between machines (a twelfth of the float input)."""
        return torch.stack(
            [letterbox(load_radiograph(self.locate(self.root, f)).pixels, self.input_size)[0] for f in files]
        )

    def inputs(self, canvases: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, S, S) float input of canvases."""
        return to_model_input(canvases, self.mean, self.std)

    def __call__(self, files: list[str]) -> torch.Tensor:
        """The model input of ``files``."""
        return self.inputs(self.canvases(files))


class _Chunks(torch.utils.data.Dataset):
    """One item per batch of files, so a DataLoader forms exactly the single-process batches."""

    def __init__(self, decoder: Decoder, chunks: list[list[str]]) -> None:
        self.decoder, self.chunks = decoder, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.decoder(self.chunks[index])


def local_batches(
    decoder: Decoder, chunks: list[list[str]], workers: int, *, pin_memory: bool
) -> Iterator[torch.Tensor]:
    """The model inputs of ``chunks`` in order, decoded by ``workers`` DataLoader processes."""
    loader = torch.utils.data.DataLoader(
        _Chunks(decoder, chunks), batch_size=None, num_workers=workers, pin_memory=pin_memory, prefetch_factor=4
    )
    yield from loader


def import_ray() -> Any:
    """The ``ray`` module, or a ScaleError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs pyarrow: the extra installs both)
    except ImportError as exc:
        raise ScaleError(
            "--ray needs Ray Data, which is not installed: pip install '.[scale]' "
            "(or pip install -r requirements-scale.txt)."
        ) from exc
    return ray


#: Seconds to wait for a --ray-address to answer before saying it does not (Ray itself retries forever).
_REACH_TIMEOUT_S = 10.0
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _address_host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``host:port`` or ``ray://host:port`` Ray address; None for one Ray resolves
    itself (``auto``, other schemes)."""
    address = address.removeprefix("ray://")
    if address == "auto" or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ScaleError(f"--ray-address {address!r} is not host:port (e.g. 127.0.0.1:6379).")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """A TCP connection to the address first: against a wrong or dead one, ray.init retries without end."""
    target = _address_host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=_REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ScaleError(
            f"No Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}); start one "
            "with `ray start --head`, or fix --ray-address."
        ) from exc


def _keep_to_loopback(address: str | None) -> None:
    """An embedded Ray, or a cluster at a loopback address, stays on 127.0.0.1: by default Ray swaps
    127.0.0.1 for the host's other address and its servers listen on every interface. Ray's switch
    for a single-machine setup is read from the environment when Ray is imported (set here first) and
    kept as a module constant (set too when Ray is already imported)."""
    target = _address_host_port(address) if address else None
    if address and (target is None or target[0] not in _LOOPBACK_HOSTS):
        return
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]  # read from sys.modules: a ModuleType


@contextlib.contextmanager
def ray_session(engine: Engine) -> Iterator[Any]:
    """Ray, connected to ``engine.ray_address`` or to an embedded local instance started here (and
    shut down on leaving, unless Ray was already running in this process); on 127.0.0.1 unless the
    address names another host. A wrong or unreachable address is one sentence within seconds."""
    _keep_to_loopback(engine.ray_address)
    ray = import_ray()
    started = not ray.is_initialized()
    if started and engine.ray_address:
        _check_reachable(engine.ray_address)
    if started:
        # Workers import this package: ship it to a cluster (a local Ray imports it in place).
        runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[1])]} if engine.ray_address else None
        try:
            ray.init(
                address=engine.ray_address,
                runtime_env=runtime_env,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        # Any exception: Ray raises a bare Exception when its node does not start in time.
        except Exception as exc:  # noqa: BLE001
            raise ScaleError(
                f"Ray could not start or reach {engine.ray_address or 'a local instance'}: {str(exc).splitlines()[0]}"
            ) from exc
    # Quiet Ray Data's own progress output: the callers draw one tqdm bar of their own.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _actors(ray: Any, engine: Engine) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for ``engine`` on the running cluster."""
    resources = ray.cluster_resources()
    if engine.device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise ScaleError("--device cuda with Ray: the cluster has no GPU; run with --device cpu.")
        return engine.actors or gpus, 1.0, 1.0
    cpus = max(1, int(resources.get("CPU", 1)))
    return engine.actors or max(1, cpus // 2), 1.0, 0.0


class _Scorer:
    """A Ray Data actor: the model (or, with the onnx backend, its exported graph's bytes) arrives
    once through the object store, then scores one batch per call."""

    def __init__(
        self, loaded: Any, decoder: Decoder, device: str, precision: str, threads: int, onnx_model: Any = None
    ) -> None:
        from functools import partial

        torch.set_num_threads(threads)
        self.device = resolve_device(device, precision)
        self.decoder, self.precision = decoder, precision
        self.predict: Callable[[torch.Tensor], np.ndarray]
        if onnx_model is not None:
            self.predict = OnnxPredictor(_fetched(onnx_model), threads)
        else:
            self.predict = partial(predict_batch_outputs, on_device(received(loaded), self.device))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One row in (a batch's first index and its canvases), one row per image out."""
        canvases = torch.from_numpy(np.asarray(batch["canvases"][0], dtype=np.uint8))
        with autocast(self.device, self.precision):
            probability = self.predict(self.decoder.inputs(canvases))
        start = int(batch["start"][0])
        return {"index": np.arange(start, start + len(probability)), "probability": probability}


def ray_probabilities(
    loaded: LoadedModel,
    decoder: Decoder,
    files: list[str],
    *,
    batch_size: int,
    engine: Engine,
    progress: bool,
    description: str,
    onnx_model: bytes | None = None,
) -> np.ndarray:
    """(files, outputs) probabilities, in file order, computed on Ray Data (see the module's docstring); with
    ``onnx_model`` (an exported graph's verified bytes, core.model.backends) the actors run it on ONNX Runtime.

    Raises:
        ScaleError: Ray is missing or unreachable, or a task failed (the first line of its error).
    """
    with ray_session(engine) as ray:
        actors, cpus, gpus = _actors(ray, engine)
        chunks = [{"start": i, "files": files[i : i + batch_size]} for i in range(0, len(files), batch_size)]

        def decode(row: dict[str, Any]) -> dict[str, Any]:
            return {"start": row["start"], "canvases": decoder.canvases(list(row["files"])).numpy()}

        dataset = (
            ray.data.from_items(chunks, override_num_blocks=min(len(chunks), 200))
            # Half a CPU per decoding task: other resources than the actors', so Ray Data keeps decoding a
            # stage of its own (not fused into the actors) that runs beside the scoring.
            .map(decode, num_cpus=0.5)
            .map_batches(
                _Scorer,
                batch_size=1,
                batch_format="numpy",
                concurrency=actors,
                num_cpus=cpus,
                num_gpus=gpus,
                fn_constructor_kwargs={
                    "loaded": None if onnx_model else ray.put(on_device(loaded, torch.device("cpu"))),
                    "decoder": decoder,
                    "device": engine.device,
                    "precision": engine.precision,
                    "threads": max(1, int(cpus)),
                    "onnx_model": ray.put(onnx_model) if onnx_model else None,
                },
            )
        )
        probability = np.full((len(files), len(loaded.outputs)), np.nan)
        try:
            with tqdm(
                total=len(files), desc=f"{description} (Ray, {actors} actors)", unit="img", disable=not progress
            ) as bar:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    probability[batch["index"]] = batch["probability"]
                    bar.update(len(batch["index"]))
        except ray.exceptions.RayError as exc:
            raise ScaleError(f"A Ray task failed: {_first_line(exc)}") from exc
        return probability


def ray_map(
    engine: Engine, items: list[dict[str, Any]], actor: type, constructor_kwargs: dict[str, Any]
) -> Iterator[Any]:
    """Run ``actor`` (a class: built once per actor, then called on a one-row pandas frame) over
    ``items`` on Ray Data, yielding its output frames as they finish (in any order). A
    ``LoadedModel`` among ``constructor_kwargs`` travels once through the object store.

    Raises:
        ScaleError: Ray is missing or unreachable, or a task failed (the first line of its error).
    """
    with ray_session(engine) as ray:
        actors, cpus, gpus = _actors(ray, engine)
        kwargs = {
            key: ray.put(on_device(value, torch.device("cpu"))) if isinstance(value, LoadedModel) else value
            for key, value in constructor_kwargs.items()
        }
        dataset = ray.data.from_items(items, override_num_blocks=min(len(items), 200)).map_batches(
            actor,
            batch_size=1,
            batch_format="pandas",
            concurrency=actors,
            num_cpus=cpus,
            num_gpus=gpus,
            fn_constructor_kwargs=kwargs,
        )
        try:
            yield from dataset.iter_batches(batch_size=None, batch_format="pandas")
        except ray.exceptions.RayError as exc:
            raise ScaleError(f"A Ray task failed: {_first_line(exc)}") from exc


def received(loaded: Any) -> LoadedModel:
    """A model handed to a Ray actor: fetched from the object store when it came as a reference."""
    import ray

    return ray.get(loaded) if isinstance(loaded, ray.ObjectRef) else loaded


def _fetched(value: Any) -> Any:
    """A value handed to a Ray actor, fetched from the object store when it came as a reference."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _first_line(exc: BaseException) -> str:
    """The innermost cause's message: Ray wraps a task's error in several layers of traceback."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
