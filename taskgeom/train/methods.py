"""Training methods, one object each, in a registry.

A method provides its network (head), its default optimiser and learning rate, anything it sets up
before training (FixMatch's labelled subset), the steps of an epoch, and the loss of one optimisation
step; the loop in :mod:`taskgeom.train.loop` does the rest (schedule, recording, resume). Adding a method
is one subclass of :class:`Method` decorated with :func:`register_method`; an unknown method name is an
error that lists the registered ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from .. import seeding
from ..data.augment import color_jitter, cutout, normalize, random_resized_crop
from ..data.tasks import EpisodeSampler
from ..models import build_model
from .config import METHOD_SETTINGS, TrainConfig
from .losses import barlow_twins, nt_xent, prototypical
from .recipe import apply_recipe
from .state import load_state

__all__ = ["Method", "METHODS", "register_method", "get_method"]

#: name -> method object, in registration order.
METHODS: dict[str, "Method"] = {}


def register_method(cls):
    """Class decorator: register one instance of a :class:`Method` subclass under ``cls.name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    unknown = set(cls.settings) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"method {cls.name!r}: settings {sorted(unknown)} are not TrainConfig fields")
    METHODS[cls.name] = cls()
    METHOD_SETTINGS[cls.name] = tuple(cls.settings)
    return cls


def get_method(name: str) -> "Method":
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}") from None


class Method:
    """The base: supervised cross-entropy on augmented batches of the task's classes, SGD."""

    name = ""
    optimizer = "sgd"
    class_head = True  # one output per class of the task (else a projection head)
    augment_batches = True  # crop-and-flip on the loader's training batches
    distributed = True  # runs data-parallel on several processes (taskgeom.train.distributed)
    #: the TrainConfig fields only this method (and others declaring them) reads: its own settings
    settings: tuple = ()
    streams = True  # trains on streamed data (imagefolder, beton): needs nothing but loader.batch

    def resolve(self, cfg):
        """``cfg`` with the method's defaults made explicit (optimiser, learning rate)."""
        opt = cfg.optimizer or self.optimizer
        lr = cfg.lr if cfg.lr is not None else (1e-3 if opt == "adam" else 0.05)
        return dataclasses.replace(cfg, optimizer=opt, lr=lr)

    def build(self, cfg, n_classes: int, in_channels: int, device) -> torch.nn.Module:
        kwargs = {"norm": cfg.norm}  # every architecture: BatchNorm or LayerNorm (resnet50: BatchNorm only)
        if cfg.arch in ("small-cnn", "fast-resnet") or cfg.arch.startswith("timm:"):
            kwargs["in_channels"] = in_channels
        n_out = n_classes if self.class_head else cfg.method_settings.projection_dim
        model = build_model(cfg.arch, n_out, **kwargs)
        return apply_recipe(model, cfg.bn_scale, cfg.bn_momentum, cfg.conv_init).to(device)

    def loader_batch_size(self, cfg) -> int:
        """Images in each of the training loader's batches."""
        return cfg.batch_size

    def prepare(self, run) -> None:
        """Set-up after the run's data and imprinting samples are chosen (may draw from ``run.rng``)."""

    def steps_per_epoch(self, run) -> int:
        return len(run.loader)

    def loss(self, run, step: int) -> torch.Tensor:
        """The loss of optimisation step ``step`` (its draws are functions of the seed and the step)."""
        cfg, loader = run.cfg, run.loader
        g = run.step_generator.manual_seed(seeding.step_seed(cfg.seed, step))
        xb, yb = loader.batch(step // run.per_epoch, step % run.per_epoch)
        if not getattr(loader, "sharded", False):  # a streaming loader decodes this process's share only
            xb, yb = run.dist.shard(xb), run.dist.shard(yb)  # this process's share of the global batch
        loader.generator.manual_seed(seeding.step_seed(cfg.seed, step))  # extra views of this step
        with run.autocast():
            return self.batch_loss(run, xb, yb, g)

    def batch_loss(self, run, xb, yb, g) -> torch.Tensor:
        return F.cross_entropy(run.train_model(xb), yb, label_smoothing=run.cfg.label_smoothing)


@register_method
class Supervised(Method):
    name = "supervised"


@register_method
class Finetune(Method):
    """Supervised training from a saved state's backbone (layers of matching shape; the head is new)."""

    name = "finetune"
    settings = METHOD_SETTINGS["finetune"]

    def build(self, cfg, n_classes, in_channels, device):
        if not cfg.method_settings.init_from:
            raise ValueError("method 'finetune' needs init_from (a saved training state)")
        model = super().build(cfg, n_classes, in_channels, device)
        state = load_state(cfg.method_settings.init_from)  # a training state, or a network's state dict
        src = state["model"] if isinstance(state.get("model"), dict) else state
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in src.items() if k in own and own[k].shape == v.shape}, strict=False)
        return model


@register_method
class Protonet(Method):
    """Episodic meta-learning with the prototypical loss on ``way``-way ``shot``-shot episodes."""

    name = "protonet"
    settings = METHOD_SETTINGS["protonet"]
    class_head = False
    distributed = False
    streams = False

    def steps_per_epoch(self, run):
        return run.cfg.method_settings.episodes_per_epoch

    def prepare(self, run):
        own = run.cfg.method_settings  # the task's labels indexed once per run (an episode's draws: ~0.05 ms)
        run.extra["episodes"] = EpisodeSampler(run.task_labels, own.way, own.shot, own.query)

    def loss(self, run, step):
        cfg, loader = run.cfg, run.loader
        run.step_generator.manual_seed(seeding.step_seed(cfg.seed, step))
        s_idx, s_y, q_idx, q_y = run.extra["episodes"](seeding.episode_seed(cfg.seed, step))
        loader.generator.manual_seed(seeding.step_seed(cfg.seed, step))
        xs, xq = loader.augmented(s_idx), loader.augmented(q_idx)
        with run.autocast():
            return prototypical(
                run.model.features(xs).float(),
                torch.as_tensor(s_y, device=run.device),
                run.model.features(xq).float(),
                torch.as_tensor(q_y, device=run.device),
                cfg.method_settings.way,
            )


class _TwoViews(Method):
    """Self-supervised on two random-resized, colour-jittered views of each image, Adam, projection head."""

    optimizer = "adam"
    class_head = False
    augment_batches = False
    distributed = False  # NT-Xent / Barlow over a global batch would need gathered projections
    streams = False

    def build(self, cfg, n_classes, in_channels, device):
        model = super().build(cfg, n_classes, in_channels, device)
        fd = model.feature_dim
        model.head = torch.nn.Sequential(
            torch.nn.Linear(fd, fd),
            torch.nn.ReLU(),
            torch.nn.Linear(fd, cfg.method_settings.projection_dim, bias=False),
        ).to(device)
        return model

    def views(self, run, xb, g):
        scale = run.cfg.method_settings.crop_scale
        v1 = color_jitter(random_resized_crop(xb, g, scale=scale), g)
        v2 = color_jitter(random_resized_crop(xb, g, scale=scale), g)
        return run.model(v1), run.model(v2)


@register_method
class SimCLR(_TwoViews):
    name = "simclr"
    settings = METHOD_SETTINGS["simclr"]

    def batch_loss(self, run, xb, yb, g):
        return nt_xent(*self.views(run, xb, g), run.cfg.method_settings.temperature)


@register_method
class BarlowTwins(_TwoViews):
    name = "barlow"
    settings = METHOD_SETTINGS["barlow"]

    def batch_loss(self, run, xb, yb, g):
        return barlow_twins(*self.views(run, xb, g), run.cfg.method_settings.barlow_lambda)


def labelled_subset(labels, cfg, rng) -> np.ndarray:
    """FixMatch's labelled images (positions in the task's training set), drawn from ``rng`` (the run's;
    ``cfg``: FixMatch's settings, or a TrainConfig):
    ``labelled_draw="random"``, ``labelled`` of them uniformly (every image at most once; the draw of runs
    recorded before the setting existed); ``"balanced"``, ``labelled / classes`` of every class (an error
    unless ``labelled`` is a multiple of the task's classes and every class has that many images)."""
    labels = np.asarray(labels)
    n = len(labels)
    if cfg.labelled_draw == "random":
        return rng.choice(n, min(cfg.labelled, n), replace=False)
    classes, counts = np.unique(labels, return_counts=True)
    per, rest = divmod(cfg.labelled, len(classes))
    if rest or per > counts.min():
        raise ValueError(
            f"labelled (--labelled) must be a multiple of the task's {len(classes)} classes, at most "
            f"{len(classes) * int(counts.min())} for a balanced draw (--labelled-draw balanced), got {cfg.labelled}"
        )
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]))


@register_method
class FixMatch(Method):
    """A labelled subset (``labelled`` images, 2,500 as in the paper) with cross-entropy on batches of
    ``batch_size``, plus confident pseudo-labels of weakly augmented images enforced on strongly augmented
    ones (colour jitter and cutout) on unlabelled batches of ``unlabelled_ratio`` x ``batch_size`` images
    (FixMatch's mu = 7); an epoch is one pass over the unlabelled images (the task's whole training set)."""

    name = "fixmatch"
    settings = METHOD_SETTINGS["fixmatch"]
    distributed = False
    streams = False

    def loader_batch_size(self, cfg) -> int:
        return cfg.batch_size * cfg.method_settings.unlabelled_ratio

    def prepare(self, run):
        run.extra["labelled"] = torch.as_tensor(
            labelled_subset(run.task_labels, run.cfg.method_settings, run.rng), device=run.device
        )

    def batch_loss(self, run, xb, yb, g):
        cfg, loader, model = run.cfg, run.loader, run.model
        labelled = run.extra["labelled"]
        li = labelled[torch.randint(0, len(labelled), (cfg.batch_size,), device=run.device, generator=g)]
        xl = loader.augment_normalized(normalize(loader.images[li]))
        sup = F.cross_entropy(model(xl), loader.labels[li])
        with torch.no_grad():
            conf, pseudo = torch.softmax(model(xb), 1).max(1)
        strong = cutout(color_jitter(xb, g), g)
        mask = (conf >= cfg.method_settings.threshold).float()
        unsup = (F.cross_entropy(model(strong), pseudo, reduction="none") * mask).mean()
        return sup + unsup
