"""TrainConfig: one training run, every setting explicit (defaults from Appendix A where the paper gives
them). ``None`` means "the method's default" and is resolved, and recorded, before training."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass

from ..choices import CONV_INITS, FILLS, FLIPS, HEADS
from ..config import option

__all__ = ["TrainConfig", "IDENTITY_EXCLUDED", "PRESETS", "CONCERNS", "METHOD_SETTINGS", "apply_preset", "validate"]
__all__ += ["concern_of", "Setup", "Optimisation", "Schedule", "FastRecipe", "Augmentation", "Recording", "Runtime"]
__all__ += ["VIEWS", "settings_view", "method_settings_class"]

#: Fields that do not change what a run computes (where it runs and what it keeps beside it): a run may
#: resume with different values of these.
IDENTITY_EXCLUDED = ("device", "state_dir", "keep_states", "log_every", "channels_last")


#: The settings each training method owns (a method of the registry declares its own as ``Method.settings``;
#: :func:`taskgeom.train.register_method` adds a new method's here). ``taskgeom train`` refuses an option owned
#: only by other methods than the run's (it would be ignored); in Python a config shared by several methods may
#: hold every method's settings, and each method reads its own.
METHOD_SETTINGS: dict[str, tuple] = {
    "supervised": (),
    "finetune": ("init_from",),
    "protonet": ("way", "shot", "query", "episodes_per_epoch", "projection_dim"),
    "simclr": ("temperature", "crop_scale", "projection_dim"),
    "barlow": ("barlow_lambda", "crop_scale", "projection_dim"),
    "fixmatch": ("labelled", "labelled_draw", "threshold", "unlabelled_ratio"),
}

#: Every other setting by what it concerns (``taskgeom train --help`` lists them so, then each method's own).
CONCERNS: dict[str, tuple] = {
    "what is trained": ("preset", "method", "arch", "norm", "seed", "init_seed"),
    "optimisation": ("optimizer", "lr", "weight_decay", "norm_weight_decay", "momentum", "label_smoothing"),
    "schedule": ("epochs", "batch_size", "schedule", "warmup", "lr_start", "lr_end"),
    "fast-recipe pieces (taskgeom.train.recipe)": (
        "bias_lr_scale",
        "whiten_bias_epochs",
        "bn_scale",
        "bn_momentum",
        "conv_init",
        "lookahead",
        "lookahead_decay",
    ),
    "augmentation and resolution": ("augment", "crop_pad", "crop_fill", "flip", "resolution", "min_res", "res_ramp"),
    "recording (checkpoints, imprinting)": ("checkpoints", "checkpoint_every", "imprint_samples", "imprint_head"),
    "runtime (device, precision, files)": (
        "device",
        "threads",
        "amp",
        "amp_dtype",
        "channels_last",
        "state_dir",
        "keep_states",
        "log_every",
    ),
}


def owners(name: str) -> tuple:
    """The methods that own the setting ``name`` (empty: a setting of every method)."""
    return tuple(m for m, names in METHOD_SETTINGS.items() if name in names)


def concern_of(name: str) -> str:
    """The concern a TrainConfig field belongs to: one of :data:`CONCERNS`, or the methods owning it."""
    for concern, names in CONCERNS.items():
        if name in names:
            return concern
    methods = owners(name)
    if not methods:
        raise KeyError(f"{name}: a TrainConfig field without a concern")
    return ("settings of method " if len(methods) == 1 else "settings of methods ") + ", ".join(methods)


#: Named settings (``--preset``). ``imagenet-resnet50`` is Appendix A.1: ResNet-50 with BlurPool, 40 epochs,
#: progressive resizing from 160 to 224 px between epochs 29 and 34, batches of 512 (read as the global batch),
#: label smoothing 0.1, SGD with momentum 0.9, no weight decay on normalisation parameters. The appendix is
#: silent on the learning rate, its schedule and the weight decay; these follow the FFCV ResNet-50 recipe the
#: paper builds on (ffcv-imagenet's rn50_40_epochs.yaml has the same 29-34 ramp, to 192 px): its "cyclic"
#: schedule (linear warm-up to the peak at epoch 2, then linear decay to 0: ``triangle`` with warm-up 0.05),
#: weight decay 1e-4, and its peak 1.7 for 8 processes x 512 = 4,096 images a step, scaled linearly to
#: 0.2125 for 512 (were the paper's 512 per GPU, 4 x 512 = 2,048 would give 0.85). Momentum is Nesterov here
#: (FFCV: plain).
PRESETS = {
    "imagenet-resnet50": dict(
        arch="resnet50",
        method="supervised",
        epochs=40,
        batch_size=512,
        optimizer="sgd",
        lr=0.2125,
        schedule="triangle",
        warmup=0.05,
        weight_decay=1e-4,
        label_smoothing=0.1,
        resolution=224,
        min_res=160,
        res_ramp=(29, 34),
    ),
    # CIFAR-10 on one GPU (issue 16; bench/bench_train.py, experiments/_family.py): the fast residual net with
    # its whitening stem, batches of 1,024, a triangle schedule with 20% warm-up to a peak of 0.8, label
    # smoothing 0.2 (88-89% in 10 epochs on an H200, bench/results/train.json, with zero-padded crops and the stem
    # fitted to airplanes alone); crops padded by reflection, as the fast recipes' (+1.3 points over zeros in a
    # small paired CPU comparison, 2026-11-27)
    "cifar10-fast-resnet": dict(
        arch="fast-resnet",
        batch_size=1024,
        lr=0.8,
        schedule="triangle",
        warmup=0.2,
        label_smoothing=0.2,
        weight_decay=5e-4,
        crop_fill="reflect",
    ),
    # the paper's WRN-16-4 on CIFAR-10, fast: batches of 512, triangle schedule with 15% warm-up to 0.4
    # (91.0% in 80 epochs, 69 s on an H200, with zero-padded crops); crops padded by reflection as in the
    # WRN paper (Zagoruyko and Komodakis, 2016)
    "cifar10-wrn-16-4": dict(
        arch="wrn-16-4",
        batch_size=512,
        lr=0.4,
        schedule="triangle",
        warmup=0.15,
        label_smoothing=0.1,
        weight_decay=5e-4,
        crop_fill="reflect",
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    preset: str | None = option(
        None,
        "named settings (taskgeom.train.PRESETS); imagenet-resnet50: Appendix A.1's ResNet-50 with BlurPool, 40 "
        "epochs, batches of 512, progressive resizing 160 -> 224 px over epochs 29-34, label smoothing 0.1, SGD "
        "with peak lr 0.2125, 2 warm-up epochs then linear decay, weight decay 1e-4; cifar10-fast-resnet: "
        "fast-resnet, batches of 1,024, peak lr 0.8, triangle schedule with 20% warm-up, label smoothing 0.2, "
        "weight decay 5e-4, crops padded by reflection; cifar10-wrn-16-4: WRN-16-4, batches of 512, peak 0.4, 15% "
        "warm-up, label smoothing 0.1, weight decay 5e-4, reflected crops; options given explicitly override it",
        choices=tuple(PRESETS),
    )

    method: str = option(
        "supervised",
        "training method (see taskgeom.train.METHODS)",
        choices=("supervised", "finetune", "protonet", "simclr", "barlow", "fixmatch"),
    )
    arch: str = option(
        "wrn-16-4",
        "network (taskgeom.models.build_model); timm:<name> for any timm architecture, randomly initialised "
        "(the timm extra; nothing is downloaded)",
        choices=("small-cnn", "wrn-16-4", "resnet18", "resnet50", "fast-resnet"),
        open_prefix="timm:",
    )
    norm: str = option(
        "batch",
        "normalisation layers (layer: the meta-learning and fine-tuning experiments)",
        choices=("batch", "layer"),
    )
    epochs: int = option(100, "training epochs", minimum=1)
    batch_size: int = option(64, "samples per batch", minimum=1)
    optimizer: str | None = option(
        None,
        "optimiser: sgd (Nesterov momentum 0.9) or adam; none: the method's "
        "(adam for simclr and barlow, sgd otherwise)",
        choices=("sgd", "adam"),
    )
    lr: float | None = option(
        None,
        "peak learning rate of the schedule; none: the method's (0.05 with sgd, 1e-3 with adam)",
        minimum=0.0,
    )
    schedule: str = option(
        "cosine",
        "learning-rate schedule: cosine (the paper's) or triangle (linear warm-up then linear decay to 0, the "
        "fast recipes'); both start with `warmup` of linear warm-up",
        choices=("cosine", "triangle"),
    )
    warmup: float = option(
        0.0, "fraction of the steps of linear learning-rate warm-up from 0 (in [0, 1))", minimum=0.0, below=1.0
    )
    lr_start: float = option(
        0.0,
        "where the warm-up (--warmup) starts, as a fraction of the peak learning rate (in [0, 1]; without a "
        "warm-up the first step is at the peak)",
        minimum=0.0,
        maximum=1.0,
    )
    lr_end: float = option(
        0.0,
        "where the decay ends, as a fraction of the peak learning rate, reached at the end of the last step (in "
        "[0, 1]; the last step itself runs one step's decay above it)",
        minimum=0.0,
        maximum=1.0,
    )
    weight_decay: float = option(
        1e-5, "weight decay (sgd; on normalisation parameters and biases only with --norm-weight-decay)", minimum=0.0
    )
    norm_weight_decay: bool = option(
        False,
        "sgd: decay normalisation parameters and biases too (as the WRN paper's code and the fast recipes do), "
        "at the same decay per step whatever their learning-rate multiplier (weight_decay / bias_lr_scale)",
    )
    bias_lr_scale: float = option(
        1.0,
        "sgd: learning-rate multiplier of biases (BatchNorm's and convolutions'; the fast recipe's 64; not "
        "fast-resnet's whitening stem's, which learns at the base rate)",
        minimum=0.0,
    )
    whiten_bias_epochs: float | None = option(
        None,
        "fast-resnet: epochs its whitening stem's bias trains, frozen after (the fast recipes': 3); none: all "
        "(other networks have no such stem and ignore it)",
        minimum=0.0,
    )
    momentum: float = option(0.9, "sgd: Nesterov momentum, in [0, 1) (the fast recipes': 0.85)", minimum=0.0, below=1.0)
    bn_scale: bool = option(
        True, "train BatchNorm's scales (false: frozen at 1, only its shifts learn, as in the fast recipes)"
    )
    bn_momentum: float = option(
        0.1,
        "BatchNorm's running-statistics momentum, PyTorch's convention: the weight of each new batch (the fast "
        "recipes': 0.4, their 0.6 being the weight kept on the old statistics)",
        minimum=0.0,
        maximum=1.0,
    )
    conv_init: str = option(
        "kaiming",
        "initialisation of the trainable convolutions and linear layers: kaiming (normal, ReLU gain), torch "
        "(PyTorch's default: uniform, std 1/sqrt(3 fan-in), 2.45x smaller: behind BatchNorm a larger effective "
        "learning rate early on, as in the fast recipes), dirac or torch-dirac (either, then the first "
        "in-channels filters of every 3 x 3 convolution set to the identity, as in the fast recipes)",
        choices=CONV_INITS,
    )
    lookahead: int = option(
        0,
        "steps between lookahead updates (0: off): the slow weights (and BatchNorm statistics) move toward the "
        "network's by 1 - decay and the network restarts from them; decay rises as (step / steps)^3 to "
        "lookahead_decay, and the last step always updates (the fast recipes': every 5 steps, 0.95^5)",
        minimum=0,
    )
    lookahead_decay: float = option(
        0.95**5, "lookahead: the decay reached at the last step (in [0, 1])", minimum=0.0, maximum=1.0
    )
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (in [0, 1))", minimum=0.0, below=1.0)
    checkpoints: int = option(
        40, "recorded checkpoints, geometric in steps (dense early); ignored with --checkpoint-every", minimum=2
    )
    checkpoint_every: int = option(
        0,
        "steps between recorded checkpoints (0: --checkpoints of them, geometric in steps, the count the same "
        "whatever the run's length); k > 0: steps 0, 1, 2, 4, ... below k (a dense geometric start, the same "
        "for every run) then every k-th step and the last, so that runs of any length have the same density "
        "of checkpoints per training step",
        minimum=0,
    )
    seed: int = option(0, "seed of initialisation, data order and every augmentation", minimum=0)
    init_seed: int | None = option(
        None,
        "seed of the network's initialisation; none: derived from seed, method and the task's classes, so "
        "that different families (methods or tasks) never share an initialisation (set it to make runs share one)",
        minimum=0,
    )
    device: str = option("auto", "auto (cuda when available), cpu or cuda[:k]")
    threads: int = option(
        1,
        "torch threads while the run trains on a CPU (0: torch's own count, recorded as the number it is). "
        "torch's reductions depend on the count, so a run is recorded with it and resumes only with it, and one "
        "thread computes the same whatever the core count (on the same CPU kind and torch build); a single "
        "thread also never waits for a pre-empted one, so it keeps its share of a busy machine. More threads: "
        "a lone large run on an idle machine, faster, with other bytes; for many runs, train several at once "
        "(taskgeom sweep --workers)",
        minimum=0,
        maximum=1024,
    )
    amp: bool = option(True, "mixed precision on CUDA")
    amp_dtype: str = option(
        "bfloat16", "mixed-precision type on CUDA (float16 adds loss scaling)", choices=("bfloat16", "float16")
    )
    channels_last: bool = option(True, "channels-last memory format on CUDA (faster convolutions)")
    way: int = option(5, "protonet: classes per episode", minimum=2)
    shot: int = option(5, "protonet: support samples per class", minimum=1)
    query: int = option(10, "protonet: query samples per class", minimum=1)
    episodes_per_epoch: int = option(100, "protonet: episodes per epoch", minimum=1)
    temperature: float = option(0.5, "simclr: NT-Xent temperature (> 0)", above=0.0)
    barlow_lambda: float = option(5e-3, "barlow: weight of the off-diagonal terms", minimum=0.0)
    crop_scale: tuple[float, float] = option(
        (0.2, 1.0),
        "simclr / barlow: area range of random-resized crops (low <= high, in (0, 1])",
        above=0.0,
        maximum=1.0,
    )
    projection_dim: int = option(
        128, "protonet / simclr / barlow: outputs of the embedding (protonet) or of the projection head", minimum=1
    )
    labelled: int = option(2500, "fixmatch: labelled subset size", minimum=1)
    labelled_draw: str = option(
        "random",
        "fixmatch: how the labelled subset is drawn (from the run's seed): random (uniform over the task's "
        "images, as runs before this setting) or balanced (labelled / classes images of every class, "
        "labelled a multiple of the task's classes)",
        choices=("random", "balanced"),
    )
    threshold: float = option(0.95, "fixmatch: pseudo-label confidence threshold (in [0, 1])", minimum=0.0, maximum=1.0)
    unlabelled_ratio: int = option(
        7,
        "fixmatch: unlabelled images per labelled image in a step (mu; batch_size is the labelled batch, an epoch "
        "one pass over the unlabelled images)",
        minimum=1,
    )
    init_from: str | None = option(None, "finetune: a saved training state (<store>/state/<id>.pt)", metavar="PATH")
    imprint_samples: int = option(
        5000, "training images used to imprint each checkpoint onto the union task", minimum=1
    )
    imprint_head: str = option(
        "cosine-ml",
        "imprinted head: cosine (eq. 7 as printed, scale 1), cosine-ml (eq. 7 with one temperature per "
        "checkpoint fitted by maximum likelihood on the imprinting samples) or euclidean (class means, the "
        "authors' code); head and temperature are recorded with every checkpoint",
        choices=HEADS,
    )
    augment: bool | None = option(
        None,
        "crop and flip training images; auto: on for images of 16 px or more (in-memory data; streamed data "
        "always get random-resized crops and flips)",
    )
    crop_pad: int | None = option(
        None, "padding of the random crops in pixels; none: an eighth of the image side (4 for CIFAR-10)", minimum=0
    )
    crop_fill: str = option(
        "zeros",
        "padding of the random crops: zeros (black) or reflect (the image mirrored at its edges, as in the WRN "
        "paper and the fast recipes)",
        choices=FILLS,
    )
    flip: str = option(
        "random",
        "horizontal flips of the random crops: random (each image with probability 1/2 in every batch) or "
        "alternate (each image mirrored in every other epoch, from a random start, as in the fast recipes)",
        choices=FLIPS,
    )
    resolution: int = option(
        224,
        "imagefolder / beton: side of the training images (at the end of progressive resizing) and of the "
        "evaluation images (a centre crop of 224/256 of the shorter side, resized)",
        minimum=8,
    )
    min_res: int | None = option(
        None,
        "imagefolder / beton: progressive resizing from this side up to --resolution over --res-ramp "
        "(none: --resolution throughout)",
        minimum=8,
    )
    res_ramp: tuple[int, int] = option(
        (29, 34),
        "imagefolder / beton: first and last epoch of progressive resizing (FFCV's ImageNet recipe; first <= last)",
        minimum=0,
    )
    state_dir: str | None = option(None, "where resumable training state is kept; none: <store>/state", metavar="PATH")
    keep_states: bool = option(False, "also keep the weights of every recorded checkpoint (<id>_ckpt<k>.pt)")
    log_every: int = option(
        50,
        "training steps between metric lines (loss, learning rate, images per second) in "
        "<store>/metrics/<id>.jsonl and, when tensorboard is installed, <store>/tensorboard/<id>",
        minimum=1,
    )

    # ---- the settings by concern: typed frozen views of this config (see CONCERNS and METHOD_SETTINGS) ----
    def part(self, view: type):
        """This config's settings of one concern: an instance of ``view`` (:class:`Optimisation`,
        :class:`Schedule`, :class:`FastRecipe`, ... of :data:`VIEWS`, or a method's settings class) holding the
        values of its fields, e.g. ``cfg.part(Optimisation).lr``."""
        return view(**{f.name: getattr(self, f.name) for f in dataclasses.fields(view)})

    @property
    def method_settings(self):
        """The settings the run's method owns (its class in :data:`METHOD_SETTINGS_CLASSES`)."""
        return self.part(method_settings_class(self.method))

    def validate(self) -> TrainConfig:
        """Raise a one-line ValueError naming the setting and its option for any value of the wrong type or
        out of its range; returns the config. The one set of rules of every route: the Python API
        (:func:`taskgeom.train.train` calls it first), ``taskgeom train``, sweep files and presets."""
        validate(self)
        return self


def settings_view(name: str, fields, doc: str) -> type:
    """A frozen dataclass of the TrainConfig fields ``fields`` (with their types and defaults): the settings of
    one concern, or a method's own settings."""
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = [n for n in fields if n not in known]
    if unknown:
        raise ValueError(f"{name}: {unknown} are not TrainConfig fields")
    spec = []
    for n in fields:
        f = known[n]
        default = (
            dataclasses.field(default=f.default)
            if f.default is not dataclasses.MISSING
            else dataclasses.field(default_factory=f.default_factory)
        )
        spec.append((n, hints[n], default))
    cls = dataclasses.make_dataclass(name, spec, frozen=True)
    cls.__module__, cls.__doc__ = __name__, doc
    return cls


Setup = settings_view("Setup", CONCERNS["what is trained"], "What is trained: preset, method, network, seeds.")
Optimisation = settings_view("Optimisation", CONCERNS["optimisation"], "The optimiser and its loss settings.")
Schedule = settings_view("Schedule", CONCERNS["schedule"], "Epochs, batch size and the learning-rate schedule.")
FastRecipe = settings_view(
    "FastRecipe",
    CONCERNS["fast-recipe pieces (taskgeom.train.recipe)"],
    "The fast CIFAR-10 recipes' pieces any network can take (taskgeom.train.recipe); defaults leave a network as built.",
)
Augmentation = settings_view("Augmentation", CONCERNS["augmentation and resolution"], "Augmentation and resolution.")
Recording = settings_view("Recording", CONCERNS["recording (checkpoints, imprinting)"], "Checkpoints and imprinting.")
Runtime = settings_view(
    "Runtime", CONCERNS["runtime (device, precision, files)"], "Where and how a run runs: device, precision, files."
)

#: concern title (``taskgeom train --help``'s sections) -> its settings class
VIEWS = {
    title: cls
    for title, cls in zip(CONCERNS, (Setup, Optimisation, Schedule, FastRecipe, Augmentation, Recording, Runtime))
}

#: method -> the class of its own settings (empty for a method without any); register_method adds new ones
METHOD_SETTINGS_CLASSES: dict[str, type] = {}


def method_settings_class(method: str) -> type:
    """The settings class of ``method`` (made from :data:`METHOD_SETTINGS` on first use)."""
    if method not in METHOD_SETTINGS:
        raise ValueError(f"unknown method {method!r}; registered methods: {', '.join(METHOD_SETTINGS)}")
    cls = METHOD_SETTINGS_CLASSES.get(method)
    if cls is None or tuple(f.name for f in dataclasses.fields(cls)) != tuple(METHOD_SETTINGS[method]):
        title = "".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", method) if w) + "Settings"
        cls = settings_view(title, METHOD_SETTINGS[method], f"The settings method {method!r} owns.")
        METHOD_SETTINGS_CLASSES[method] = cls
    return cls


def validate(cfg: TrainConfig) -> None:
    """:meth:`TrainConfig.validate`: each field's declared type, range and choices
    (:func:`taskgeom.config.check_fields`), then the rules that tie fields together."""
    from ..config import check_fields

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"expected a TrainConfig, got {type(cfg).__name__}")
    check_fields(cfg, open_choices=("method", "arch"))  # registries: checked where they are used

    def bad(name, what):
        return ValueError(f"{name} (--{name.replace('_', '-')}) must be {what}, got {getattr(cfg, name)!r}")

    arch_choices = dict((f.name, f.metadata["choices"]) for f in dataclasses.fields(TrainConfig))["arch"]
    timm_arch = cfg.arch.startswith("timm:") and len(cfg.arch) > 5
    if cfg.arch.lower() not in arch_choices and not re.fullmatch(r"wrn-\d+-\d+", cfg.arch.lower()) and not timm_arch:
        raise bad("arch", f"one of {', '.join(arch_choices)} (or wrn-<depth>-<width>, or timm:<name>)")
    if cfg.crop_scale[0] > cfg.crop_scale[1]:
        raise bad("crop_scale", "a range low <= high")
    if cfg.res_ramp[0] > cfg.res_ramp[1]:
        raise bad("res_ramp", "first <= last epoch")
    if cfg.min_res is not None and cfg.min_res > cfg.resolution:
        raise ValueError(
            f"min_res ({cfg.min_res}) must not exceed resolution ({cfg.resolution}) (--min-res, --resolution)"
        )
    if cfg.init_from is not None and not cfg.init_from:
        raise bad("init_from", "a file name (none: no saved state)")


def foreign_setting(name: str, method: str) -> ValueError:
    """The one-line error for a setting that ``method`` would ignore."""
    return ValueError(
        f"{name} (--{name.replace('_', '-')}) is a setting of method {' / '.join(owners(name))}; this run's method "
        f"is {method}, which would ignore it"
    )


def apply_preset(cfg: TrainConfig, keep=()) -> TrainConfig:
    """``cfg`` with the settings of its ``preset`` (none: unchanged), except the fields named in ``keep``
    (those set explicitly)."""
    if cfg.preset is None:
        return cfg
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if k not in keep})
