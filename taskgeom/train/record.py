"""Recording from any training loop: one :class:`Recorder` evaluates a model on a fixed evaluation set,
imprints it onto the evaluation classes where its outputs are not over them (eq. 7), and appends the
predictions to a :class:`~taskgeom.store.PredictionStore` as one checkpoint of a trajectory.

    rec = Recorder("my-store", (x_test, y_test), eval_name="digits-test", imprint=(x_train, y_train),
                   task="0-4", method="adamw", seed=0)
    for step in range(steps):
        ...                                   # the user's own training step
        if step % 50 == 0:
            rec.record(model, step=step)      # evaluated in inference mode, training mode restored

The model either returns logits over the evaluation classes (no ``imprint`` given: the predictions are
their softmax) or exposes features (``features=`` a callable ``(model, x) -> (B, F)``, by default
``model.features(x)``) that are imprinted with ``head`` from the ``imprint`` samples at every checkpoint.
Evaluation runs in batches of ``batch_size`` under ``torch.inference_mode`` on the model's own device,
so memory stays bounded; BatchNorm statistics and dropout are in evaluation mode while recording and every
module's training flag is put back afterwards. A checkpoint is keyed by its ``step``: recording a step the
trajectory already holds appends nothing (a re-run of the same loop adds only what is missing), and an
evaluation set whose labels differ from the store's under the same name is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .._checks import check_choice, check_int
from .._validate import host_array, tensor_of
from ..imprinting import HEADS, imprint
from ..store import PredictionStore

__all__ = ["Recorder", "every"]


def _batches(data, batch_size: int, digest=None) -> tuple[Callable[[], Iterable], np.ndarray]:
    """An iterator factory over ``(x, y)`` batches and all labels, from ``(x, y)`` tensors or arrays or from
    a DataLoader-like iterable of ``(x, y)`` batches (iterated once here to read its labels). ``digest``: a
    hashlib object that the inputs are fed to on the way (:func:`_fingerprint`)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = (tensor_of(v) for v in data)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs and labels differ in length ({x.shape[0]} vs {y.shape[0]})")

        def it():
            for i in range(0, x.shape[0], batch_size):
                yield x[i : i + batch_size], y[i : i + batch_size]

        if digest is not None:
            _fingerprint(digest, x)
        return it, y.cpu().numpy()
    if not hasattr(data, "__iter__"):
        raise TypeError(f"expected (inputs, labels) or an iterable of (inputs, labels) batches, got {type(data)}")
    labels = []
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("a data loader must yield (inputs, labels) batches")
        labels.append(host_array(batch[1]).reshape(-1))
        if digest is not None:
            _fingerprint(digest, batch[0])
    if not labels:
        raise ValueError("the data loader yielded no batch")
    return (lambda: ((b[0], b[1]) for b in data)), np.concatenate(labels)


def _fingerprint(digest, x) -> None:
    """Feed inputs to ``digest`` as contiguous float32 bytes: the same labels with other images or preprocessing
    are another evaluation set. Batching does not change the result (the bytes are fed in order)."""
    digest.update(torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def _int_labels(y: np.ndarray, what: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            return y.astype(np.int64)
        raise ValueError(f"{what} labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


class Recorder:
    """Records checkpoints of one trajectory from any training loop (see the module docstring).

    Parameters
    ----------
    store : a :class:`PredictionStore` or its folder (created when missing).
    eval_data : the evaluation set, ``(inputs, labels)`` or an iterable of ``(inputs, labels)`` batches
        (the same samples in the same order at every checkpoint).
    eval_name : the evaluation set's name in the store (trajectories are compared on one evaluation set).
    imprint : the imprinting samples, as ``eval_data``, with labels over the evaluation classes; None when
        the model's outputs are already logits over the evaluation classes.
    features : ``(model, x) -> (B, F)`` features for imprinting; default ``model.features(x)``.
    head : the imprinted head (``"cosine-ml"``, ``"cosine"`` or ``"euclidean"``, :func:`taskgeom.imprinting`).
    classes : the number of evaluation classes (default: the largest label + 1).
    task, method, seed, architecture : what the trajectory is (the analysis groups by these).
    name : the trajectory's name (default from task, method, architecture, seed and eval_name, and with
        ``config`` a short hash of it: two recipes recorded with the same seed are two trajectories).
    dtype : ``"float16"`` or ``"float32"`` on disk.
    config : the run's settings (JSON); a trajectory recorded with other settings under this name is an
        error, so that two runs are never mixed.
    batch_size : samples evaluated at once.
    outputs : what the model returns when no ``imprint`` is given: ``"logits"`` (softmax applied here) or
        ``"probabilities"`` (used as they are); logits that look like probabilities (non-negative rows
        summing to 1) are refused rather than softmaxed a second time.
    metadata : any other JSON fields, recorded with the trajectory.
    """

    def __init__(
        self,
        store,
        eval_data,
        eval_name: str = "eval",
        *,
        imprint=None,
        features: Callable | None = None,
        head: str = "cosine-ml",
        classes: int | None = None,
        task: str | None = None,
        method: str | None = None,
        seed: int | None = None,
        architecture: str | None = None,
        name: str | None = None,
        dtype: str = "float16",
        config: dict | None = None,
        batch_size: int = 256,
        outputs: str = "logits",
        **metadata,
    ):
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.outputs = check_choice(outputs, "outputs", ("logits", "probabilities"))
        self.head = check_choice(head, "head", HEADS)
        self.store = store if isinstance(store, PredictionStore) else PredictionStore(store, create=True)
        inputs = hashlib.sha256()
        self._eval, labels = _batches(eval_data, self.batch_size, inputs)
        digest = inputs.hexdigest()
        labels = _int_labels(labels, "evaluation")
        self.labels = labels
        self._imprint = None
        if imprint is not None:
            self._imprint, imp_labels = _batches(imprint, self.batch_size)
            self._imprint_labels = _int_labels(imp_labels, "imprinting")
        c = int(labels.max()) + 1 if classes is None else check_int(classes, "classes", minimum=1)
        if self._imprint is not None:
            c = max(c, int(self._imprint_labels.max()) + 1) if classes is None else c
        self.classes = c
        self._features = features
        es = self.store.add_eval_set(eval_name, labels, c=c, inputs_sha256=digest)
        recorded = (es.extra or {}).get("inputs_sha256")
        if recorded is not None and recorded != digest:
            raise ValueError(
                f"evaluation set {eval_name!r} was recorded from other inputs (the same labels; other images or "
                f"preprocessing: sha256 {digest[:12]}, recorded {recorded[:12]}): give the new inputs another eval_name"
            )
        if name is None and config:
            key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
            name = f"{task}/{method}/{architecture}/seed{seed}/config-{key}@{es.name}"
        self.traj = self.store.create_trajectory(
            es.name,
            task=task,
            method=method,
            seed=seed,
            architecture=architecture,
            dtype=dtype,
            name=name,
            config=config,
            **metadata,
        )

    # ---- evaluation ------------------------------------------------------------------------------
    def _device(self, model: torch.nn.Module) -> torch.device:
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
        return torch.device("cpu")

    def _outputs(self, model, batches, fn) -> torch.Tensor:
        device = self._device(model)
        out = [fn(model, x.to(device, non_blocking=True)).float().cpu() for x, _ in batches()]
        return torch.cat(out)

    def _feature_fn(self, model):
        if self._features is not None:
            return self._features
        if not callable(getattr(model, "features", None)):
            raise ValueError(
                "imprinting needs the model's features: pass features=lambda model, x: ... (penultimate layer), "
                "or give a model with a features(x) method"
            )
        return lambda m, x: m.features(x).flatten(1)

    def predict(self, model: torch.nn.Module) -> np.ndarray:
        """The model's (N, C) probabilities on the evaluation set (imprinted where ``imprint`` was given),
        in inference mode; every module's training flag is restored afterwards."""
        flags = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.inference_mode():
                if self._imprint is None:
                    logits = self._outputs(model, self._eval, lambda m, x: m(x))
                    if logits.dim() != 2 or logits.shape[1] != self.classes:
                        raise ValueError(
                            f"the model's outputs have shape {tuple(logits.shape)}, not (N, {self.classes}) logits "
                            "over the evaluation classes: pass imprint=(inputs, labels) to imprint its features"
                        )
                    rows = logits.double()
                    simplex = bool((rows >= 0).all()) and bool(((rows.sum(1) - 1).abs() < 1e-3).all())
                    if self.outputs == "probabilities":
                        probs = rows
                    elif simplex:
                        raise ValueError(
                            "the model's outputs look like probabilities (non-negative, rows summing to 1), not "
                            "logits: pass outputs='probabilities' to the Recorder, or return logits"
                        )
                    else:
                        probs = torch.softmax(rows, dim=1)
                else:
                    fn = self._feature_fn(model)
                    f_imp = self._outputs(model, self._imprint, fn)
                    f_ev = self._outputs(model, self._eval, fn)
                    head = imprint(f_imp, self._imprint_labels, self.classes, head=self.head)
                    probs = torch.as_tensor(head(f_ev))
        finally:
            for m, was in flags.items():
                m.training = was
        if probs.shape[0] != self.labels.size:
            raise ValueError(f"the evaluation set gave {probs.shape[0]} predictions for {self.labels.size} labels")
        return probs.double().cpu().numpy()

    # ---- recording -------------------------------------------------------------------------------
    def recorded_steps(self) -> list:
        """The steps of the checkpoints this trajectory holds, in order."""
        return [c["step"] for c in self.traj.checkpoints]

    def record(self, model: torch.nn.Module, step: int, epoch: float | None = None, **metadata) -> int:
        """Evaluate ``model`` and append it as the checkpoint of ``step``; returns its index. A step already
        recorded is not evaluated again (its index is returned): re-running a loop adds what is missing."""
        step = check_int(step, "step", minimum=0)
        steps = self.recorded_steps()
        if step in steps:
            return steps.index(step)
        if steps and step < steps[-1]:
            raise ValueError(
                f"trajectory {self.traj.name!r} already holds step {steps[-1]}; steps must be recorded in "
                f"increasing order (got {step})"
            )
        probs = self.predict(model)
        acc = float((probs.argmax(1) == self.labels).mean())
        extra = dict(metadata)
        if self._imprint is not None:
            extra["imprint_head"] = self.head
        return self.store.append(self.traj, probs, epoch=epoch, step=step, accuracy=acc, **extra)

    def hook(self, every_steps: int) -> Callable:
        """A plain hook for any loop: ``hook(model, step, epoch=None)`` records at step 0 and every
        ``every_steps`` steps, and does nothing at the others."""
        return every(self, every_steps)


def every(recorder: Recorder, every_steps: int) -> Callable:
    """``hook(model, step, epoch=None, **metadata)`` that records ``step`` when it is a multiple of
    ``every_steps`` (see :meth:`Recorder.hook`)."""
    n = check_int(every_steps, "every_steps", minimum=1)

    def hook(model, step: int, epoch: float | None = None, **metadata):
        if step % n == 0:
            return recorder.record(model, step=step, epoch=epoch, **metadata)
        return None

    return hook
