"""What runs the forward passes of ``core.evaluate`` (and, on request, ``core.predict``'s
probability): eager torch, or ONNX Runtime on the CPU (``--backend torch|onnx``).

ONNX Runtime is the default on a CPU: the whole ensemble, every member on each image and its
mirror (flip TTA), is exported once as one graph (:class:`FusedProbability`, batch axis dynamic)
and runs about 3x faster than eager torch on the project's two-core machine, with probabilities
within 1e-5 of torch's (tests/test_backends.py checks 1e-4; docs/results.md, *Speed*). The export takes
about 20 s and is cached in a folder of the user's own (0700) under a digest of the weights, the
input size, the TTA setting and the torch version, so a new checkpoint exports again and an
unchanged one does not; a cached graph is loaded only when it is the user's own, in a folder no
one else may write, and its SHA-256 is the one recorded at export (a graph planted by another
local user is never run). ``--backend onnx`` falls back to torch, with one line on stderr saying why, when
onnxruntime is not installed or the model runs on a GPU (``--device cuda|mps``). CAMs need
gradients and always run on torch.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.model.checkpoint import LoadedModel
from core.model.prediction import predict_batch_outputs, uses_flip_tta
from core.model.registry import MeanProbabilityEnsemble, platt

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "ONNX_OPSET",
    "FusedProbability",
    "resolve_backend",
    "onnx_cache_dir",
    "onnx_graph",
    "onnx_model_path",
    "OnnxPredictor",
    "batch_predictor",
]

BACKENDS = ("onnx", "torch")
#: ONNX Runtime where it applies (a CPU, onnxruntime installed), else torch (one line says why).
DEFAULT_BACKEND = "onnx"
ONNX_OPSET = 17
#: Bump when the exported graph changes, so cached exports of the old graph are not reused.
_EXPORT_VERSION = 2

BatchPredictor = Callable[[torch.Tensor], np.ndarray]


class FusedProbability(nn.Module):
    """The model's output probabilities (P(abnormal), and P(fracture) where it has it) as one module,
    what the ONNX export sees: each member runs once on the batch and
    (with flip TTA) its mirror stacked together, 4 forwards of 2N instead of 8 of N; the result is
    the mean of the members' sigmoids, averaged over each image and its mirror (what
    core.model.prediction.probabilities computes, without the ensemble's logit round trip)."""

    def __init__(
        self, members: list[nn.Module], *, flip_tta: bool, calibration: Mapping[int, tuple[float, float]] | None = None
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.flip_tta = flip_tta
        #: The ensemble's Platt scaling per output column, applied per view before the mirror average,
        #: as the torch path does (the ensemble's forward calibrates each view's logit).
        self.calibration = dict(calibration or {})

    @classmethod
    def of(cls, loaded: LoadedModel) -> FusedProbability:
        """The fused module of a loaded model (its members, the card's TTA), in eval mode."""
        model = loaded.model
        if isinstance(model, MeanProbabilityEnsemble):
            return cls(list(model.members), flip_tta=uses_flip_tta(loaded), calibration=model.calibration).eval()
        return cls([model], flip_tta=uses_flip_tta(loaded)).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, outputs) float32 probabilities of a prepared (N, 3, S, S) batch."""
        both = torch.cat([x, torch.flip(x, dims=[-1])]) if self.flip_tta else x
        mean = torch.stack([torch.sigmoid(m(both).float()) for m in self.members]).mean(0)
        if self.calibration:
            mean = torch.sigmoid(platt(torch.logit(mean, eps=1e-6), self.calibration))
        if not self.flip_tta:
            return mean
        n = x.shape[0]
        return (mean[:n] + mean[n:]) / 2


def resolve_backend(requested: str, device: str | torch.device = "cpu") -> tuple[str, str | None]:
    """(backend to use, the one-line reason when it is not the one requested)."""
    if requested not in BACKENDS:
        raise ValueError(f"Unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}.")
    if requested == "torch":
        return "torch", None
    device_type = torch.device(device).type
    if device_type != "cpu":
        return "torch", f"--backend onnx runs on the CPU only; on --device {device_type} the model runs on torch."
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch", (
            "onnxruntime is not installed (pip install -r requirements.txt), so the model runs on "
            "torch: the same probabilities within 1e-4, about 3x slower on a CPU."
        )
    return "onnx", None


def onnx_cache_dir() -> Path:
    """Where exported graphs are kept: MURA_LENS_ONNX_CACHE if set, else a folder of this user's own in
    the temp folder (never the repository; the user id in its name keeps users apart)."""
    default = Path(tempfile.gettempdir()) / f"mura_lens_onnx-{os.getuid()}"
    return Path(os.environ.get("MURA_LENS_ONNX_CACHE") or default)


def _digest(loaded: LoadedModel, fused: FusedProbability) -> str:
    """SHA-256 of what the exported graph depends on: the weights (every tensor's name, shape and
    bytes), the input size, flip TTA, the Platt calibration, the torch version, the opset and the export
    code's version."""
    digest = hashlib.sha256(
        f"{_EXPORT_VERSION}|{torch.__version__}|{ONNX_OPSET}|{loaded.input_size}|{fused.flip_tta}|"
        f"{sorted(fused.calibration.items())}".encode()
    )
    for name, tensor in fused.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _unsafe(info: os.stat_result, kind: str) -> str | None:
    """Why a cache folder or file another user could have planted or could change may not be
    trusted (None when it is this user's own and no one else may write it)."""
    if info.st_uid != os.getuid():
        return f"the {kind} belongs to another user"
    if info.st_mode & 0o022:
        return f"other users may write the {kind}"
    return None


def _private_folder(directory: Path) -> str | None:
    """Make ``directory`` (owner-only, 0700) when absent; None when it is safe to cache in, else why not."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        return f"it cannot be made ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder (a link or a file)"
    return _unsafe(info, "folder")


def _sidecar(path: Path) -> Path:
    """Where the SHA-256 of the graph at ``path`` is recorded when it is exported."""
    return path.with_name(path.name + ".sha256")


def _read_own(path: Path) -> bytes | None:
    """The bytes of a regular file of this user's own that no one else may write (no link followed),
    else None; checked on the open file, so it cannot be swapped between the check and the read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or _unsafe(info, "file"):
            return None
        return handle.read()


def _verified(path: Path) -> bytes | None:
    """The graph at ``path`` when its SHA-256 is the one recorded at export, else None."""
    graph, recorded = _read_own(path), _read_own(_sidecar(path))
    if graph is None or recorded is None:
        return None
    return graph if hashlib.sha256(graph).hexdigest() == recorded.decode("ascii", "replace").strip() else None


def _export(fused: FusedProbability, input_size: int, path: Path) -> bytes:
    """Export ``fused`` to ``path`` and record its SHA-256 beside it; the graph's bytes."""
    example = torch.zeros(2, 3, input_size, input_size)
    # Unique temporary names, then atomic renames: two runs exporting at once never read half a file
    # (the later rename wins; a graph and a digest from different runs disagree and export again).
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".partial")
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter (its deprecation notice and constant-folding remarks are noise here):
            # the torch.export-based one needs onnxscript, which is not a requirement.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                fused,
                (example,),
                temporary,
                input_names=["x"],
                output_names=["p"],
                dynamic_axes={"x": {0: "n"}, "p": {0: "n"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        graph = Path(temporary).read_bytes()
        _write_private(_sidecar(path), f"{hashlib.sha256(graph).hexdigest()}\n".encode())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return graph


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, mode 0600 whatever the umask (a group-writable file is not trusted)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def onnx_graph(loaded: LoadedModel, cache_dir: Path | None = None) -> tuple[Path, bytes]:
    """Where ``loaded``'s fused probability graph is cached, and its bytes: exported once (about 20 s
    for the shipped ensemble), then reused while the weights and settings are unchanged and the file
    is this user's own, in a folder only this user may write, with the SHA-256 recorded at export;
    anything else is never loaded. A cache folder that cannot be trusted (another user's, or
    writable by others) is not used: the graph is exported into a fresh private folder, removed
    when the process ends, and one line on stderr says why."""
    fused = FusedProbability.of(loaded)
    directory = cache_dir or onnx_cache_dir()
    reason = _private_folder(directory)
    if reason:
        print(
            f"note: the ONNX cache folder is not used ({reason}; it should be yours, mode 0700), so the "
            "graph is exported afresh into a private folder.",
            file=sys.stderr,
            flush=True,
        )
        directory = Path(tempfile.mkdtemp(prefix="mura_lens_onnx-"))  # 0700, made by this process
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / f"{loaded.name}-{_digest(loaded, fused)[:32]}.onnx"
    graph = None if reason else _verified(path)
    return path, graph if graph is not None else _export(fused, loaded.input_size, path)


def onnx_model_path(loaded: LoadedModel, cache_dir: Path | None = None) -> Path:
    """The ONNX file of ``loaded``'s fused probability, exported or verified (see :func:`onnx_graph`)."""
    return onnx_graph(loaded, cache_dir)[0]


class OnnxPredictor:
    """An ONNX Runtime session (CPU provider) of a fused probability graph, called like
    core.model.prediction.predict_batch_outputs: a prepared (N, 3, S, S) batch in, (N, outputs) float64
    probabilities out."""

    def __init__(self, model: Path | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Each image's output probabilities (column 0: P(abnormal))."""
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(["p"], {"x": x})[0].astype(np.float64)


@functools.lru_cache(maxsize=4)
def _cached_predictor(graph: bytes, threads: int) -> OnnxPredictor:
    return OnnxPredictor(graph, threads)


def batch_predictor(loaded: LoadedModel, backend: str) -> BatchPredictor:
    """The function that turns a prepared batch into probabilities on ``backend`` (already resolved:
    see :func:`resolve_backend`); for onnx, exports the graph if no verified cached export fits."""
    if backend == "torch":
        return functools.partial(predict_batch_outputs, loaded)
    if backend != "onnx":
        raise ValueError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    return _cached_predictor(onnx_graph(loaded)[1], torch.get_num_threads())
