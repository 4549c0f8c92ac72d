"""Producing trajectories (Appendix A): train a network on a task with one of six methods and record
each checkpoint's predictions, after imprinting onto the evaluation (union) task, into a
PredictionStore.

Methods: ``supervised`` (SGD + Nesterov 0.9, cosine schedule, weight decay excluding normalisation
parameters and biases, optional label smoothing, mixed precision on GPU), ``finetune`` (supervised from
a saved checkpoint's backbone), ``protonet`` (episodic meta-learning with the prototypical loss),
``simclr`` (NT-Xent on two views), ``barlow`` (Barlow Twins) and ``fixmatch`` (a labelled subset plus
confident pseudo-labels of weakly augmented images on strongly augmented ones).

With ``keep_states`` the weights of every recorded checkpoint are kept too (``<id>_ckpt<k>.pt``), so
that other runs can be fine-tuned from any point of a trajectory (Result 6).

Runs are resumable: every random draw (data order, augmentation, episodes, views) is a pure function
of (seed, step), and after each recorded checkpoint the training state (weights, optimiser, schedule,
step) is saved as plain tensors (loaded with ``weights_only=True``); a resumed run continues from it,
reproduces the uninterrupted run, and never records a checkpoint twice nor skips one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.loader import DeviceLoader, normalize, random_resized_crop
from .data.tasks import episodes
from .models import build_model

__all__ = ["TrainConfig", "train", "METHODS", "checkpoint_steps"]

METHODS = ("supervised", "finetune", "protonet", "simclr", "barlow", "fixmatch")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (defaults from Appendix A where the paper gives them)."""

    method: str = "supervised"
    arch: str = "wrn-16-4"
    norm: str = "batch"  # "layer" for the meta-learning and fine-tuning experiments
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.05  # SGD peak learning rate (Adam 1e-3 for simclr / barlow)
    weight_decay: float = 1e-5
    label_smoothing: float = 0.0
    checkpoints: int = 40  # recorded checkpoints, geometric in steps (dense early)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    way: int = 5  # protonet
    shot: int = 5
    query: int = 10
    episodes_per_epoch: int = 100
    temperature: float = 0.5  # simclr
    barlow_lambda: float = 5e-3
    crop_scale: tuple[float, float] = (0.2, 1.0)  # simclr / barlow: area range of random-resized crops
    projection_dim: int = 128
    labelled: int = 2500  # fixmatch labelled subset
    threshold: float = 0.95  # fixmatch confidence
    unlabelled_ratio: int = 7
    init_from: str | None = None  # finetune: path of a saved training state
    imprint_samples: int = 5000  # imprinting samples per checkpoint (from the training split)
    imprint_head: str = "cosine"  # "cosine" (eq. 7, the paper) or "euclidean" (class means, the authors' code)
    augment: bool | None = None  # crop + flip; default: on for images of 16 px or more (off for 8 x 8 digits)
    state_dir: str | None = None  # where resumable state is kept (default: beside the store)
    keep_states: bool = False  # also keep the weights of every recorded checkpoint (<id>_ckpt<k>.pt)


def checkpoint_steps(total: int, count: int) -> list[int]:
    """``count`` distinct steps in [0, total], geometrically spaced: dense early, sparse late."""
    steps = np.unique(np.round(np.geomspace(1, total + 1, count * 3)).astype(int) - 1)
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, count)).astype(int))
    return sorted(set(int(s) for s in steps[idx]) | {0, total})


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---- augmentation for the contrastive and semi-supervised methods (batched, on the device) ---------
def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.4, gray_p: float = 0.2) -> torch.Tensor:
    """Random brightness, contrast, saturation per sample and random grayscale, on normalised images."""
    b = x.shape[0]
    img = x * 0.25 + 0.5  # back to [0, 1]

    def factor():
        return 1 + strength * (2 * torch.rand(b, 1, 1, 1, device=x.device, generator=g) - 1)

    img = img * factor()
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * factor() + mean
    gray = img.mean(1, keepdim=True)
    img = (img - gray) * factor() + gray
    to_gray = torch.rand(b, 1, 1, 1, device=x.device, generator=g) < gray_p
    img = torch.where(to_gray, gray.expand_as(img), img)
    return (img.clamp(0, 1) - 0.5) / 0.25


def cutout(x: torch.Tensor, g: torch.Generator, size: int | None = None) -> torch.Tensor:
    b, _, h, w = x.shape
    size = size or max(1, h // 4)
    cy = torch.randint(0, h, (b,), device=x.device, generator=g)[:, None, None]
    cx = torch.randint(0, w, (b,), device=x.device, generator=g)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(hole[:, None], 0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> torch.Tensor:
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / (z1.std(0) + 1e-6)
    z2 = (z2 - z2.mean(0)) / (z2.std(0) + 1e-6)
    c = z1.T @ z2 / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lam * off


def prototypical(features_s, y_s, features_q, y_q, way: int) -> torch.Tensor:
    protos = torch.stack([features_s[y_s == j].mean(0) for j in range(way)])
    return F.cross_entropy(-torch.cdist(features_q, protos) ** 2, y_q)


# ---- state --------------------------------------------------------------------------------------
def _save_state(path: Path, model, opt, sched, step: int, recorded: int) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "step": torch.tensor(step), "recorded": torch.tensor(recorded)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves the previous state intact


def _load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train(cfg: TrainConfig, task_classes, train_data, eval_data, store, eval_set: str, task_name: str,
          progress_bar: bool = True):
    """Train one run and record its trajectory; returns the store's Trajectory.

    ``train_data`` and ``eval_data`` are ``(images (N, H, W, C) uint8, labels (N,))``; the evaluation
    labels index the evaluation (union) task's classes, which the model is imprinted onto at each
    checkpoint using samples of ``train_data`` of those classes.
    """
    from tqdm.auto import tqdm

    from .imprint import imprint

    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    device = _device(cfg.device)
    x_tr, y_tr = np.asarray(train_data[0]), np.asarray(train_data[1])
    x_ev, y_ev = np.asarray(eval_data[0]), np.asarray(eval_data[1])
    n_eval_classes = int(store.eval_set(eval_set).c)
    classes = [int(c) for c in task_classes]
    remap = np.full(int(max(y_tr.max(), max(classes))) + 1, -1)
    remap[classes] = np.arange(len(classes))
    keep = remap[y_tr] >= 0
    xt, yt = x_tr[keep], remap[y_tr[keep]]
    traj = store.create_trajectory(eval_set, task=task_name, method=cfg.method, seed=cfg.seed, architecture=cfg.arch,
                                   dtype="float16", classes=classes)
    state_dir = Path(cfg.state_dir) if cfg.state_dir else store.root / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / f"{traj.id:06d}.pt"

    torch.manual_seed(cfg.seed)
    step_gen = torch.Generator(device=device)

    def gen_for(step_: int) -> torch.Generator:
        return step_gen.manual_seed(cfg.seed * 7_919_993 + step_)
    in_ch = x_tr.shape[-1]
    kwargs = ({"norm": cfg.norm} if cfg.arch.startswith("wrn") else
              ({"in_channels": in_ch, "norm": cfg.norm} if cfg.arch == "small-cnn" else {}))
    n_out = len(classes) if cfg.method in ("supervised", "finetune", "fixmatch") else cfg.projection_dim
    model = build_model(cfg.arch, n_out, **kwargs).to(device)
    if cfg.method in ("simclr", "barlow"):
        fd = model.feature_dim
        model.head = torch.nn.Sequential(torch.nn.Linear(fd, fd), torch.nn.ReLU(),
                                         torch.nn.Linear(fd, cfg.projection_dim, bias=False)).to(device)
    if cfg.method == "finetune":
        if not cfg.init_from:
            raise ValueError("method 'finetune' needs init_from (a saved training state)")
        src = _load_state(Path(cfg.init_from))["model"]
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in src.items() if k in own and own[k].shape == v.shape}, strict=False)

    if cfg.method in ("simclr", "barlow"):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr if cfg.lr != TrainConfig.lr else 1e-3)
    else:
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=0.9, nesterov=True)

    augment = cfg.augment if cfg.augment is not None else x_tr.shape[1] >= 16
    loader = DeviceLoader(xt, yt, batch_size=cfg.batch_size, device=device, shuffle=True,
                          augment=augment and cfg.method not in ("simclr", "barlow"),
                          drop_last=len(yt) > cfg.batch_size, seed=cfg.seed)
    per_epoch = cfg.episodes_per_epoch if cfg.method == "protonet" else len(loader)
    total = max(1, per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    schedule = checkpoint_steps(total, cfg.checkpoints)

    step, recorded = 0, 0
    if state_path.exists():
        st = _load_state(state_path)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, recorded = int(st["step"]), int(st["recorded"])
    stored = len(traj)  # may exceed `recorded` by one if a run died between append and state save

    missing = sorted(set(range(n_eval_classes)) - set(np.unique(y_tr).tolist()))
    if missing:
        raise ValueError(f"imprinting onto the evaluation task needs training samples of each of its classes; "
                         f"classes {missing} have none in train_data (pass the whole training split: the task's "
                         f"classes are selected from it)")
    imprint_idx = np.flatnonzero(np.isin(y_tr, np.arange(n_eval_classes)))
    rng = np.random.default_rng(cfg.seed)
    if len(imprint_idx) > cfg.imprint_samples:
        imprint_idx = np.sort(rng.choice(imprint_idx, cfg.imprint_samples, replace=False))
    imp_loader = DeviceLoader(x_tr[imprint_idx], y_tr[imprint_idx], batch_size=512, device=device, shuffle=False,
                              augment=False)
    ev_loader = DeviceLoader(x_ev, y_ev, batch_size=512, device=device, shuffle=False, augment=False)
    own = (y_ev < len(remap)) & (remap[np.minimum(y_ev, len(remap) - 1)] >= 0)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    @torch.no_grad()
    def record(k: int):
        nonlocal stored
        if k < stored:
            return  # already in the store (resumed run)
        model.eval()
        with torch.autocast(device.type, enabled=use_amp):
            f_imp = torch.cat([model.features(x).float() for x, _ in imp_loader])
            f_ev = torch.cat([model.features(x).float() for x, _ in ev_loader])
        probs = imprint(f_imp, imp_loader.labels, n_eval_classes, head=cfg.imprint_head)(f_ev)
        probs = torch.as_tensor(probs).float().cpu().numpy()
        acc = float((probs.argmax(1) == y_ev).mean())
        extra = {}
        if cfg.method in ("supervised", "finetune", "fixmatch") and own.any():
            # the network's own head on the evaluation samples of its task's classes
            head = torch.cat([model.head(model.features(x)).argmax(1) for x, _ in ev_loader]).cpu().numpy()
            extra["head_accuracy"] = float((head[own] == remap[y_ev[own]]).mean())
        model.train()
        store.append(traj, probs, epoch=step / per_epoch, step=step, accuracy=acc, **extra)
        stored += 1

    labelled_idx = None
    if cfg.method == "fixmatch":
        labelled_idx = torch.as_tensor(rng.choice(len(yt), min(cfg.labelled, len(yt)), replace=False), device=device)

    def loss_fn(xb, yb, g):
        if cfg.method in ("supervised", "finetune"):
            return F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
        if cfg.method in ("simclr", "barlow"):
            v1 = color_jitter(random_resized_crop(xb, g, scale=cfg.crop_scale), g)
            v2 = color_jitter(random_resized_crop(xb, g, scale=cfg.crop_scale), g)
            z1, z2 = model(v1), model(v2)
            return nt_xent(z1, z2, cfg.temperature) if cfg.method == "simclr" else barlow_twins(z1, z2, cfg.barlow_lambda)
        # fixmatch
        li = labelled_idx[torch.randint(0, len(labelled_idx), (cfg.batch_size,), device=device, generator=g)]
        xl = loader._augment_normalized(normalize(loader.images[li]))
        sup = F.cross_entropy(model(xl), loader.labels[li])
        with torch.no_grad():
            probs = torch.softmax(model(xb), 1)
            conf, pseudo = probs.max(1)
        strong = cutout(color_jitter(xb, g), g)
        mask = (conf >= cfg.threshold).float()
        unsup = (F.cross_entropy(model(strong), pseudo, reduction="none") * mask).mean()
        return sup + unsup

    def keep(k: int) -> None:
        if cfg.keep_states:  # a copy of the state just saved, for fine-tuning from checkpoint k
            dst = state_dir / f"{traj.id:06d}_ckpt{k:03d}.pt"
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes(state_path.read_bytes())
            os.replace(tmp, dst)

    if step == 0 and recorded == 0:
        record(0)
        recorded = 1
        _save_state(state_path, model, opt, sched, step, recorded)
        keep(0)
    bar = tqdm(total=total, initial=step, desc=f"{task_name}/{cfg.method}/seed{cfg.seed}", disable=not progress_bar,
               leave=False)
    model.train()
    while step < total:
        g = gen_for(step)
        if cfg.method == "protonet":
            s_idx, s_y, q_idx, q_y = next(episodes(yt, cfg.way, cfg.shot, cfg.query, count=1,
                                                   seed=cfg.seed * 100_003 + step))
            loader.generator.manual_seed(cfg.seed * 7_919_993 + step)
            xs = loader._augment_normalized(normalize(loader.images[torch.as_tensor(s_idx, device=device)]))
            xq = loader._augment_normalized(normalize(loader.images[torch.as_tensor(q_idx, device=device)]))
            with torch.autocast(device.type, enabled=use_amp):
                loss = prototypical(model.features(xs).float(), torch.as_tensor(s_y, device=device),
                                    model.features(xq).float(), torch.as_tensor(q_y, device=device), cfg.way)
        else:
            xb, yb = loader.batch(step // per_epoch, step % per_epoch)
            loader.generator.manual_seed(cfg.seed * 7_919_993 + step)  # extra views of this step
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(xb, yb, g)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        bar.update(1)
        if step in schedule:
            record(recorded)
            recorded += 1
            _save_state(state_path, model, opt, sched, step, recorded)
            keep(recorded - 1)
    bar.close()
    return traj


# ---- command line -------------------------------------------------------------------------------
def load_dataset(name: str, path: str | None):
    """(train, test, class names, named tasks) for ``digits`` or ``cifar10`` (tar / folder / batches)."""
    if name == "digits":
        from .picture import DIGIT_TASKS, load_digits_split

        tr, te = load_digits_split(0.35, 0)
        return tr, te, [str(i) for i in range(10)], {k: list(v) for k, v in DIGIT_TASKS.items()}
    if name == "cifar10":
        from .data import CIFAR10_TASKS, load_images

        if path is None:
            raise ValueError("--data cifar10 needs --data-path (a folder or tar of <split>/<class>/<image>)")
        p = Path(path)
        train_src = p / "train.tar.gz" if (p / "train.tar.gz").exists() else p
        test_src = p / "test.tar.gz" if (p / "test.tar.gz").exists() else p
        tr = load_images(train_src, split="train")
        te = load_images(test_src, split="test")
        tasks = {k: t.indices(tr.classes) for k, t in CIFAR10_TASKS.items()}
        return (tr.images, tr.labels), (te.images, te.labels), tr.classes, tasks
    raise ValueError(f"unknown dataset {name!r} (digits, cifar10)")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train runs and record their imprinted predictions in a store",
                       description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--data", default="digits", choices=["digits", "cifar10"])
    p.add_argument("--data-path", help="CIFAR-10 folder or tarballs (e.g. ../shared/data/cifar10)")
    p.add_argument("--task", default="all", help="a named task (digits: all, 0-4, 5-9, even, odd; cifar10: "
                                                 "all, vehicles, animals, mammals, pets, ...)")
    p.add_argument("--store", default="taskgeom-store")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    for name in ("method", "arch", "norm", "device"):
        p.add_argument(f"--{name}", default=getattr(d, name))
    for name in ("epochs", "batch_size", "checkpoints", "way", "shot", "query", "labelled"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=getattr(d, name))
    for name in ("lr", "weight_decay", "label_smoothing"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=getattr(d, name))
    p.add_argument("--init-from", help="finetune: a saved training state (<store>/state/<id>.pt)")
    p.set_defaults(fn=_cmd_train)


def _cmd_train(args) -> int:
    import time

    from .store import PredictionStore

    tr, te, classes, tasks = load_dataset(args.data, args.data_path)
    if args.task not in tasks:
        raise ValueError(f"unknown task {args.task!r}; known: {sorted(tasks)}")
    store = PredictionStore(args.store, create=True)
    eval_set = f"{args.data}-test"
    store.add_eval_set(eval_set, te[1], class_names=classes)
    for seed in args.seeds:
        cfg = TrainConfig(method=args.method, arch=args.arch, norm=args.norm, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          label_smoothing=args.label_smoothing, checkpoints=args.checkpoints, seed=seed,
                          device=args.device, way=args.way, shot=args.shot, query=args.query,
                          labelled=args.labelled, init_from=args.init_from)
        t0 = time.perf_counter()
        traj = train(cfg, tasks[args.task], tr, te, store, eval_set, args.task)
        last = traj.checkpoints[-1]
        head = f", head accuracy {last['head_accuracy']:.4f}" if "head_accuracy" in last else ""
        print(f"{traj.name}: {len(traj)} checkpoints, imprinted accuracy on all classes {last['accuracy']:.4f}"
              f"{head}, {time.perf_counter() - t0:.1f} s")
    return 0
