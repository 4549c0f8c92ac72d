"""The training loop (Appendix A): schedule, recording and resume, for any registered method.

Each run trains a network on a task with one method (:mod:`taskgeom.train.methods`) and records each
checkpoint's predictions, after imprinting onto the evaluation (union) task (eq. 7), into a
PredictionStore. The run's resolved configuration and the code's version are stored with its trajectory.

Runs are resumable: every random draw (data order, augmentation, episodes, views) is a pure function of
(seed, step) (:mod:`taskgeom.seeding`), and after each recorded checkpoint the training state (weights,
optimiser, schedule, step) is saved as plain tensors; a resumed run continues from it, reproduces the
uninterrupted run, and never records a checkpoint twice nor skips one. Metrics a user can watch (loss,
learning rate, images per second every ``log_every`` steps; accuracy at every recorded checkpoint) go to
``<store>/metrics/<id>.jsonl`` (one JSON object a line, appended across resumes) and, when TensorBoard
is installed (the ``tensorboard`` extra), to ``<store>/tensorboard/<id>``. With ``keep_states`` the weights
of every recorded checkpoint are kept too (``<id>_ckpt<k>.pt``), so that other runs can be fine-tuned
from any point of a trajectory (Result 6).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import config as _config
from .. import seeding
from .._native import warn_if_openmp_spins
from .._provenance import code_version
from ..data.augment import normalize
from ..data.loader import DeviceLoader
from ..data.stream import resolution_at
from ..imprinting import imprint
from ..store import trajectory_name
from . import distributed
from .config import IDENTITY_EXCLUDED, FastRecipe, Optimisation, Schedule, TrainConfig
from .methods import Method, get_method
from .recipe import Lookahead
from .state import copy_state, load_state, save_state

__all__ = ["train", "check_config", "checkpoint_steps", "resolve_device", "identity", "lr_factor"]


def checkpoint_steps(total: int, count: int, every: int = 0) -> list[int]:
    """The steps in [0, total] at which a run records a checkpoint (0 and ``total`` always).

    ``every == 0``: ``count`` distinct steps, geometrically spaced (dense early, sparse late), the same count
    whatever ``total`` (the behaviour of runs recorded before ``checkpoint_every`` existed). ``every > 0``:
    a dense geometric start the same for every run, the steps ``every // 2**j`` (j = 1, 2, ...: ..., 4, 2, 1),
    then every ``every``-th step: the same density of checkpoints per training step whatever the run's
    length (``count`` is ignored)."""
    if every:
        start = {every >> j for j in range(1, every.bit_length())} - {0}
        return sorted({s for s in start if s < total} | set(range(0, total + 1, every)) | {0, total})
    steps = np.unique(np.round(np.geomspace(1, total + 1, count * 3)).astype(int) - 1)
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, count)).astype(int))
    return sorted(set(int(s) for s in steps[idx]) | {0, total})


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (a GPU when one is usable, else the CPU) or the named device, checked before any work:
    a CUDA device on a machine without a usable GPU is a one-line error, not the driver's message later."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a device torch knows ({' '.join(str(exc).split())})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r}: no usable CUDA GPU here (torch.cuda.is_available() is False); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def identity(cfg: TrainConfig) -> dict:
    """The settings that define what a run computes (stored with its trajectory; a resume must match)."""
    return {k: v for k, v in _config.to_dict(cfg).items() if k not in IDENTITY_EXCLUDED}


@dataclass
class RunState:
    """Everything one training run works with (what methods see as ``run``)."""

    cfg: TrainConfig
    method: Method
    device: torch.device
    classes: list
    task_images: np.ndarray | None  # training images of the task's classes (None: streamed data)
    task_labels: np.ndarray  # their labels in the task, 0..k-1
    model: torch.nn.Module | None = None
    train_model: torch.nn.Module | None = None  # the model, or its DistributedDataParallel wrapper
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    loader: DeviceLoader | None = None
    step_generator: torch.Generator | None = None
    rng: np.random.Generator | None = None
    per_epoch: int = 1
    use_amp: bool = False
    lookahead: Lookahead | None = None
    extra: dict = field(default_factory=dict)

    def autocast(self):
        """Mixed precision of the run's forward passes (``cfg.amp_dtype`` on CUDA; off elsewhere)."""
        return torch.autocast(self.device.type, dtype=getattr(torch, self.cfg.amp_dtype), enabled=self.use_amp)


def _task_data(cfg, method, classes, x_tr, y_tr, device) -> RunState:
    """The run's task data; ``x_tr`` None for streamed data (``extra["task_index"]``: the samples' positions)."""
    remap = np.full(int(max(y_tr.max(), max(classes))) + 1, -1)
    remap[classes] = np.arange(len(classes))
    keep = remap[y_tr] >= 0
    run = RunState(cfg, method, device, classes, None if x_tr is None else x_tr[keep], remap[y_tr[keep]])
    run.extra["remap"] = remap
    run.extra["task_index"] = np.flatnonzero(keep)
    return run


def _resolution(cfg: TrainConfig):
    """Streamed data's training resolution: ``cfg.resolution``, or a function of the epoch (progressive
    resizing from ``min_res`` over the epochs ``res_ramp``)."""
    if cfg.min_res is None:
        return cfg.resolution
    ramp = tuple(int(e) for e in cfg.res_ramp)
    if len(ramp) != 2 or not 0 <= ramp[0] <= ramp[1]:
        raise ValueError(f"res_ramp must be two epochs, first <= last, got {list(cfg.res_ramp)}")
    if cfg.min_res > cfg.resolution:
        raise ValueError(f"min_res ({cfg.min_res}) must not exceed resolution ({cfg.resolution})")
    return functools.partial(resolution_at, min_res=cfg.min_res, max_res=cfg.resolution, ramp=ramp)


def _stream_loader(run: RunState, source):
    """The training loader of streamed data: random-resized crops and flips at the scheduled resolution."""
    bs = run.method.loader_batch_size(run.cfg)
    return source.loader(
        run.extra["task_index"],
        run.task_labels,
        batch_size=bs,
        device=run.device,
        train=True,
        resolution=_resolution(run.cfg),
        seed=run.cfg.seed,
        drop_last=len(run.task_labels) > bs,
        shard=(run.dist.rank, run.dist.world),
    )


def _optimizer(model: torch.nn.Module, cfg: Optimisation, recipe: FastRecipe, device) -> torch.optim.Optimizer:
    """The run's optimiser. SGD's parameter groups: weights (decayed), biases (at ``bias_lr_scale`` times the
    rate), normalisation weights, and fast-resnet's whitening stem bias (the base rate; frozen after
    ``whiten_bias_epochs`` by the schedule; in the biases' group when neither setting is used).
    Normalisation parameters and biases are decayed only with ``norm_weight_decay``, at the same decay per
    step as the weights (their ``weight_decay`` divided by their rate multiplier). Every group is named (``"name"``) for :func:`_lr_lambdas`."""
    fused = {"fused": True} if device.type == "cuda" else {}  # one kernel for all parameters' updates
    if cfg.optimizer == "adam":
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, **fused)
    if cfg.optimizer != "sgd":
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    stem = getattr(getattr(model, "whiten", None), "bias", None)  # fast-resnet's whitening stem bias
    if recipe.whiten_bias_epochs is None and recipe.bias_lr_scale == 1.0:
        stem = None  # then it learns as the biases do, in their group (as runs recorded before did: they resume)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p is not stem]  # not frozen
    decay = [p for _, p in named if p.dim() > 1]
    biases = [p for n, p in named if p.dim() <= 1 and n.endswith("bias")]
    other = [p for n, p in named if p.dim() <= 1 and not n.endswith("bias")]  # normalisation weights
    wd, scale = cfg.weight_decay, recipe.bias_lr_scale
    norm_wd = wd if cfg.norm_weight_decay else 0.0
    groups = [
        {"name": "weights", "params": decay, "weight_decay": wd},
        {"name": "biases", "params": biases, "weight_decay": norm_wd / scale if scale else 0.0, "lr": cfg.lr * scale},
        {"name": "norm", "params": other, "weight_decay": norm_wd},
        {"name": "stem", "params": [stem] if stem is not None and stem.requires_grad else [], "weight_decay": norm_wd},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        **fused,
    )


def _lr_lambdas(opt: torch.optim.Optimizer, cfg: Schedule, recipe: FastRecipe, total: int, per_epoch: int) -> list:
    """The schedule of each parameter group of ``opt`` (``LambdaLR``): :func:`lr_factor` for all, times 0 for
    the whitening stem's bias from step ``whiten_bias_epochs x per_epoch`` on (frozen: with the rate 0 SGD
    leaves a parameter exactly where it is, momentum and decay included)."""

    until = math.inf if recipe.whiten_bias_epochs is None else round(recipe.whiten_bias_epochs * per_epoch)

    def base(s):
        return lr_factor(s, total, cfg.schedule, cfg.warmup, cfg.lr_start, cfg.lr_end)

    def stem(s):
        return base(s) if s < until else 0.0

    return [stem if g.get("name") == "stem" else base for g in opt.param_groups]


def lr_factor(step: int, total: int, schedule: str, warmup: float, start: float = 0.0, end: float = 0.0) -> float:
    """The learning rate of ``step`` of ``total`` as a fraction of the peak: linear warm-up from ``start`` over
    the first ``warmup`` of the steps, then cosine or linear (``triangle``) decay to ``end`` at ``total``."""
    s, w = min(step, total), warmup * total
    if w > 0 and s < w:
        return start + (1.0 - start) * s / w
    x = (s - w) / max(total - w, 1e-12)
    shape = 0.5 * (1 + math.cos(math.pi * x)) if schedule == "cosine" else 1.0 - x
    return end + (1.0 - end) * shape


def _imprint_loaders(run: RunState, x_tr, y_tr, x_ev, y_ev, n_eval_classes: int):
    """Loaders of the imprinting samples (from the training split, all evaluation classes) and of the
    evaluation set; draws the imprinting subset from ``run.rng``."""
    streamed = x_tr is None
    missing = sorted(set(range(n_eval_classes)) - set(np.unique(y_tr).tolist()))
    if missing:
        raise ValueError(
            f"imprinting onto the evaluation task needs training samples of each of its classes; "
            f"classes {missing} have none in train_data (pass the whole training split: the task's "
            f"classes are selected from it)"
        )
    idx = np.flatnonzero(np.isin(y_tr, np.arange(n_eval_classes)))
    if len(idx) > run.cfg.imprint_samples:
        idx = np.sort(run.rng.choice(idx, run.cfg.imprint_samples, replace=False))
    if streamed:  # x_ev is then the evaluation source; both stream, centre-cropped at cfg.resolution
        kw = dict(batch_size=256, device=run.device, train=False, resolution=run.cfg.resolution)
        return run.extra["train_source"].loader(idx, y_tr[idx], **kw), x_ev.loader(np.arange(len(y_ev)), y_ev, **kw)
    imp = DeviceLoader(x_tr[idx], y_tr[idx], batch_size=512, device=run.device, shuffle=False, augment=False)
    ev = DeviceLoader(x_ev, y_ev, batch_size=512, device=run.device, shuffle=False, augment=False)
    return imp, ev


class _Recorder:
    """Imprints the current model onto the evaluation task and appends its predictions to the store."""

    def __init__(self, run: RunState, store, traj, imp_loader, ev_loader, y_ev, n_eval_classes: int):
        self.run, self.store, self.traj = run, store, traj
        self.imp, self.ev, self.y_ev, self.c = imp_loader, ev_loader, y_ev, n_eval_classes
        remap = run.extra["remap"]
        self.own = (y_ev < len(remap)) & (remap[np.minimum(y_ev, len(remap) - 1)] >= 0)
        self.stored = len(traj)  # may exceed the state's count by one if a run died between append and save
        self.last: dict = {}

    @torch.no_grad()
    def __call__(self, k: int, step: int) -> None:
        if k < self.stored:
            return  # already in the store (resumed run)
        run, model = self.run, self.run.model
        model.eval()
        with run.autocast():
            f_imp = torch.cat([model.features(x).float() for x, _ in self.imp])
            f_ev = torch.cat([model.features(x).float() for x, _ in self.ev])
        head = imprint(f_imp, self.imp.labels, self.c, head=run.cfg.imprint_head)
        probs = torch.as_tensor(head(f_ev)).float().cpu().numpy()
        acc = float((probs.argmax(1) == self.y_ev).mean())
        extra = {"imprint_head": head.head, "imprint_temperature": head.scale}
        if run.method.class_head and self.own.any():
            # the network's own head on the evaluation samples of its task's classes
            own = torch.cat([model.head(model.features(x)).argmax(1) for x, _ in self.ev]).cpu().numpy()
            remap = run.extra["remap"]
            extra["head_accuracy"] = float((own[self.own] == remap[self.y_ev[self.own]]).mean())
        model.train()
        self.store.append(self.traj, probs, epoch=step / run.per_epoch, step=step, accuracy=acc, **extra)
        self.stored += 1
        self.last = {"accuracy": acc, **extra}


class _Metrics:
    """Metric lines of a run: ``<store>/metrics/<id>.jsonl`` always, TensorBoard when importable."""

    def __init__(self, store, traj, cfg: TrainConfig):
        self.path = store.root / "metrics" / f"{traj.id:06d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard extra is not installed
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tb = SummaryWriter(log_dir=str(store.root / "tensorboard" / f"{traj.id:06d}"))
        self.name = traj.name

    def write(self, kind: str, step: int, **values) -> None:
        line = {"kind": kind, "step": step, "time": time.time(), **values}
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, v in values.items():
                if isinstance(v, (int, float)) and key != "epoch":
                    self.tb.add_scalar(f"{kind}/{key}", v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _as_recorded(ident: dict, recorded: dict | None) -> dict:
    """``ident`` as a trajectory recorded before some settings existed states it: the settings it lacks are
    left out where they hold their defaults (which compute what the code did before they were added), so
    such runs still resume."""
    if not recorded:
        return ident
    defaults = _config.to_dict(TrainConfig())
    out = {k: v for k, v in ident.items() if k in recorded or k not in defaults or v != defaults[k]}
    if "threads" not in recorded:  # recorded before a run had a thread count: it ran on torch's, not known
        out.pop("threads", None)
    return out


def _create_trajectory(store, eval_set, task_name, cfg, classes, new: bool):
    """The run's trajectory. A recorded run with the same settings is resumed: the base name
    ``task/method/arch/seed@eval_set`` or one of its separate variants ``...~2``, ``...~3``. Otherwise the
    base trajectory is created (an error if it exists with other settings), or with ``new`` the next
    variant."""
    ident = identity(cfg)
    meta = dict(
        task=task_name,
        method=cfg.method,
        seed=cfg.seed,
        architecture=cfg.arch,
        dtype="float16",
        classes=classes,
        config=ident,
        code=code_version(),
        # the full resolved config as first run, operational fields (device, state_dir, ...) included
        run_config=_config.to_dict(cfg),
    )
    base = trajectory_name(task_name, cfg.method, cfg.arch, cfg.seed, eval_set)
    names = [base] + [
        t.name for t in store.select(task=task_name, method=cfg.method, seed=cfg.seed) if t.name.startswith(base + "~")
    ]
    for name in names:
        found = store.select(name=name)
        if found and found[0].config == _as_recorded(ident, found[0].config):
            return store.create_trajectory(eval_set, name=name, **{**meta, "config": found[0].config})
    if not new or not store.select(name=base):
        found = store.select(name=base)  # if it exists (other settings), the error names real differences only
        cfg_as = _as_recorded(ident, found[0].config) if found else ident
        return store.create_trajectory(eval_set, name=base, **{**meta, "config": cfg_as})
    k = 2
    while store.select(name=f"{base}~{k}"):
        k += 1
    return store.create_trajectory(eval_set, name=f"{base}~{k}", **meta)


def whitening_sample(n: int, seed: int, size: int = 5000) -> np.ndarray:
    """Positions of the images a data-fitted stem is fitted to: ``size`` of the task's ``n`` training images
    drawn without replacement (from ``seed``), in increasing order. The images are stored class by class, so
    the first ``size`` would be one class's (fitted to airplanes alone before this was drawn at random)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 0x57A7]).choice(n, size, replace=False))


def _device_loader(run: RunState, train_data) -> DeviceLoader:
    """The training loader of in-memory data: crop and flip (when on) on the device."""
    cfg = run.cfg
    augment = cfg.augment if cfg.augment is not None else np.asarray(train_data[0]).shape[1] >= 16
    return DeviceLoader(
        run.task_images,
        run.task_labels,
        batch_size=run.method.loader_batch_size(cfg),
        device=run.device,
        shuffle=True,
        augment=augment and run.method.augment_batches,
        pad=cfg.crop_pad,
        fill=cfg.crop_fill,
        flip=cfg.flip,
        drop_last=len(run.task_labels) > run.method.loader_batch_size(cfg),
        seed=cfg.seed,
    )


def _setup(run: RunState, store, traj, train_data) -> tuple:
    """Model, optimiser, loader and schedule of a run, restored from its saved state when there is one."""
    cfg, device = run.cfg, run.device
    seed = cfg.init_seed if cfg.init_seed is not None else seeding.init_seed(cfg.seed, cfg.method, run.classes)
    torch.manual_seed(seed)
    run.step_generator = torch.Generator(device=device)
    streamed = run.task_images is None
    model = run.method.build(cfg, len(run.classes), 3 if streamed else np.asarray(train_data[0]).shape[-1], device)
    if hasattr(model, "fit_whitening") and not cfg.init_from:  # a data-fitted stem (fast-resnet): fitted
        # to 5,000 of the task's training images drawn at random (a fine-tuned model keeps its source's)
        pick = whitening_sample(len(run.task_labels), seed)
        model.fit_whitening(normalize(torch.as_tensor(run.task_images[pick]).permute(0, 3, 1, 2).to(device)))
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run.model, run.train_model = distributed.wrap_model(model, run.dist, device)
    recipe = cfg.part(FastRecipe)
    opt = _optimizer(run.model, cfg.part(Optimisation), recipe, device)
    if streamed:
        run.loader = _stream_loader(run, train_data)
    else:
        run.loader = _device_loader(run, train_data)
    run.per_epoch = run.method.steps_per_epoch(run)
    total = max(1, run.per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambdas(opt, cfg.part(Schedule), recipe, total, run.per_epoch))
    run.lookahead = Lookahead(run.model, recipe.lookahead, total, recipe.lookahead_decay) if recipe.lookahead else None
    state_dir = Path(cfg.state_dir) if cfg.state_dir else store.root / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / f"{traj.id:06d}.pt"
    step, recorded = 0, 0
    if state_path.exists():
        st = load_state(state_path)
        run.model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if run.lookahead is not None:
            if "lookahead" not in st:
                raise ValueError(f"{state_path}: the saved state has no lookahead weights, which this run uses")
            run.lookahead.load_state_dict(st["lookahead"])
        step, recorded = int(st["step"]), int(st["recorded"])
    return opt, sched, total, state_path, step, recorded


def _parts(train_data, eval_data, method, cfg):
    """(training images or None, training labels, evaluation images or source, evaluation labels); streamed
    data (sources with a ``loader``) are checked against what the method and network need."""
    if not hasattr(train_data, "loader"):
        return np.asarray(train_data[0]), np.asarray(train_data[1]), np.asarray(eval_data[0]), np.asarray(eval_data[1])
    if not hasattr(eval_data, "loader"):
        raise ValueError("streamed training data needs a streamed evaluation set (both imagefolder or both beton)")
    if not method.streams:
        raise ValueError(
            f"method {cfg.method!r} needs the images in memory; streamed data (imagefolder, beton) trains "
            "the supervised and finetune methods"
        )
    if cfg.arch == "fast-resnet":
        raise ValueError("fast-resnet fits its stem to in-memory images; use another --arch with streamed data")
    return None, np.asarray(train_data.labels), eval_data, np.asarray(eval_data.labels)


def checkpoint_state(state_dir, run_id: int, k: int) -> Path:
    """The saved weights of checkpoint ``k`` of run ``run_id`` (kept with ``keep_states``)."""
    return Path(state_dir) / f"{run_id:06d}_ckpt{k:03d}.pt"


def check_config(cfg: TrainConfig) -> None:
    """Raise a one-line ValueError (naming the setting and its option) for settings of the wrong type or out
    of their range, before anything is created: :meth:`TrainConfig.validate`, the rules of every route
    (``taskgeom train`` and sweeps call it before they open a store, :func:`train` first), and the method's
    name."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"expected a TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    get_method(cfg.method)  # an unknown method


def train(
    cfg: TrainConfig,
    task_classes,
    train_data,
    eval_data,
    store,
    eval_set: str,
    task_name: str,
    progress_bar: bool = True,
    new: bool = False,
):
    """Train one run and record its trajectory; returns the store's Trajectory.

    The run trains on ``cfg.threads`` torch threads (torch's setting is restored after it).

    ``train_data`` and ``eval_data`` are ``(images (N, H, W, C) uint8, labels (N,))``, or streamed sources
    (:mod:`taskgeom.data.stream`: ImageFolder or ``.beton``, decoded batch by batch); the evaluation
    labels index the evaluation (union) task's classes, which the model is imprinted onto at each
    checkpoint using samples of ``train_data`` of those classes. An existing trajectory of the same run is
    resumed (its stored configuration must match); ``new=True`` starts a separate trajectory instead.
    """
    check_config(cfg)  # (a bad thread count included: the one-line error, not torch's)
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _train(cfg, task_classes, train_data, eval_data, store, eval_set, task_name, progress_bar, new)
    finally:
        torch.set_num_threads(old)


def resolved(cfg: TrainConfig, imprint_available: int) -> TrainConfig:
    """``cfg`` as a run records it: its method's defaults made explicit and the imprinting samples those there
    are (``imprint_available``: training samples of the evaluation task's classes) when fewer were asked."""
    cfg = get_method(cfg.method).resolve(cfg)
    threads = cfg.threads or torch.get_num_threads()  # 0: torch's count here, recorded as the number it is
    return dataclasses.replace(
        cfg, imprint_samples=max(1, min(cfg.imprint_samples, int(imprint_available))), threads=threads
    )


def imprinting_samples(train_labels, classes: int) -> int:
    """The training samples of the evaluation task's classes (``0 .. classes - 1``): what imprinting can use
    (the ``imprint_available`` of :func:`resolved`)."""
    return int(np.isin(train_labels, np.arange(int(classes))).sum())


def settings_differ(cfg: TrainConfig, imprint_available: int, recorded: dict) -> list:
    """The settings in which ``cfg`` differs from a recorded run's (``Trajectory.config``): ``(name,
    recorded value, value now)``; empty when it would resume that run."""
    now = _as_recorded(identity(resolved(cfg, imprint_available)), recorded)
    return [(k, recorded.get(k), now.get(k)) for k in sorted(set(now) | set(recorded)) if now.get(k) != recorded.get(k)]


def _train(cfg, task_classes, train_data, eval_data, store, eval_set, task_name, progress_bar, new):
    method = get_method(cfg.method)
    x_tr, y_tr, x_ev, y_ev = _parts(train_data, eval_data, method, method.resolve(cfg))
    # the imprinting samples actually used (all there are, when fewer than asked): what is recorded
    cfg = resolved(cfg, imprinting_samples(y_tr, store.eval_set(eval_set).c))
    d, device_name = distributed.setup(cfg.device)
    if d.active and not method.distributed:
        raise ValueError(
            f"method {cfg.method!r} does not run on several processes yet (supported: supervised, finetune)"
        )
    device = resolve_device(device_name)
    if device.type == "cpu" and torch.get_num_threads() > 1:  # one thread never waits for another
        warn_if_openmp_spins("training on the CPU")
    n_eval_classes = int(store.eval_set(eval_set).c)
    classes = [int(c) for c in task_classes]
    run = _task_data(cfg, method, classes, x_tr, y_tr, device)
    run.dist = d
    run.extra["train_source"] = train_data if x_tr is None else None
    traj = _create_trajectory(store, eval_set, task_name, cfg, classes, new) if d.main else None
    d.barrier()  # rank 0 created the trajectory; the others find it (same settings: no write)
    if not d.main:
        traj = store.trajectory(d.broadcast(None))
    else:
        d.broadcast(traj.id)
    opt, sched, total, state_path, step, recorded = _setup(run, store, traj, train_data)
    run.rng = np.random.default_rng(cfg.seed)
    imp_loader, ev_loader = _imprint_loaders(run, x_tr, y_tr, x_ev, y_ev, n_eval_classes)
    run.use_amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest convolution algorithms for the fixed batch shapes
    record = _Recorder(run, store, traj, imp_loader, ev_loader, y_ev, n_eval_classes)
    method.prepare(run)
    metrics = _Metrics(store, traj, cfg) if d.main else None  # rank 0 writes the metrics
    try:
        _optimise(run, opt, sched, total, record, state_path, step, recorded, progress_bar, task_name, metrics)
    finally:
        if metrics is not None:
            metrics.close()
    return traj


class _TrainLog:
    """The metrics' training lines: the mean loss over the steps since the last line, the rate, and the
    throughput with the seconds spent recording (``paused``) left out."""

    def __init__(self, metrics, cfg, per_epoch: int):
        self.metrics, self.cfg, self.per_epoch = metrics, cfg, per_epoch
        self.loss_sum, self.since, self.t_last, self.paused = None, 0, time.perf_counter(), 0.0

    def add(self, loss, step: int, lr: float, total: int) -> None:
        if self.metrics is None:
            return
        self.loss_sum = loss.detach().float() if self.loss_sum is None else self.loss_sum + loss.detach().float()
        self.since += 1
        if step % self.cfg.log_every == 0 or step == total:
            now = time.perf_counter()
            self.metrics.write(
                "train",
                step,
                epoch=step / self.per_epoch,
                loss=float(self.loss_sum) / self.since,  # mean over the steps since the last line
                lr=float(lr),
                # training throughput (batch_size x steps per second, recording time excluded)
                images_per_second=self.since * self.cfg.batch_size / max(now - self.t_last - self.paused, 1e-9),
            )
            self.loss_sum, self.since, self.t_last, self.paused = None, 0, now, 0.0


def _step_bar(run: RunState, total: int, step: int, task_name: str, checkpoints: int, enabled: bool):
    """The run's progress bar (off a terminal: a heartbeat line every 30 s), shown by one process."""
    from .._progress import bar as progress

    cfg = run.cfg
    desc = f"training {task_name}/{cfg.method}/seed{cfg.seed} (recording {checkpoints} checkpoints)"
    return progress(
        total=total, initial=step, desc=desc, enabled=bool(enabled and run.dist.main), leave=False, unit="step"
    )


def _optimise(
    run: RunState,
    opt,
    sched,
    total: int,
    record,
    state_path: Path,
    step: int,
    recorded: int,
    progress_bar: bool,
    task_name: str,
    metrics: _Metrics | None = None,
) -> None:
    """The optimisation steps from ``step`` to ``total``, recording and saving at the scheduled steps."""
    cfg = run.cfg
    schedule = checkpoint_steps(total, cfg.checkpoints, cfg.checkpoint_every)
    scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp and cfg.amp_dtype == "float16")

    log = _TrainLog(metrics, cfg, run.per_epoch)

    def checkpoint(k: int) -> None:
        t0 = time.perf_counter()
        if run.dist.main:  # one process records, writes and saves; the others wait for it
            fresh = k >= record.stored
            record(k, step)
            if metrics is not None and fresh:
                metrics.write("checkpoint", step, epoch=step / run.per_epoch, checkpoint=k, **record.last)
            save_state(state_path, run.model, opt, sched, step, k + 1, run.lookahead)
            if cfg.keep_states:  # a copy of the state just saved, for fine-tuning from checkpoint k
                copy_state(state_path, checkpoint_state(state_path.parent, int(state_path.stem), k))
        run.dist.barrier()
        log.paused += time.perf_counter() - t0

    if step == 0 and recorded == 0:
        checkpoint(0)
        recorded = 1
    bar = _step_bar(run, total, step, task_name, len(schedule), progress_bar)
    run.model.train()
    log.t_last, log.paused = time.perf_counter(), 0.0  # (the first checkpoint's time is not in this interval)
    while step < total:
        loss = run.method.loss(run, step)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        lr = sched.get_last_lr()[0]  # the rate this step used
        sched.step()
        step += 1
        if run.lookahead is not None:
            run.lookahead.step(step)
        bar.update(1)
        log.add(loss, step, lr, total)
        if step in schedule:
            checkpoint(recorded)
            recorded += 1
    bar.close()
