"""Fast training on one GPU (issue 16, item 1): time to accuracy of the two CIFAR-10 recipes through
``taskgeom.train.train`` itself (bfloat16 autocast, channels-last, the device-resident loader, fused SGD,
recording included), and several small models trained at once on one GPU.

* ``fast-resnet``: a few settings (epochs x peak learning rate), each one full run recording 20 checkpoints
  into a store; seconds per model from the call to ``train`` to its return (whitening fit, training,
  imprinting and recording, state saves), test accuracy of the network's head at the last checkpoint, and
  with horizontal-flip test-time augmentation.
* ``wrn-16-4``: the paper's network; a one-epoch probe measures throughput, then one run with as many
  epochs as fit ``--wrn-seconds`` (capped by ``--wrn-max-epochs``).
* concurrency: ``--workers`` fast-resnet runs at once (``run_sweep(workers=K)``: spawned processes sharing
  the GPU) against the same runs one at a time in one process.

The first run of each network warms up cuDNN's algorithm search and is not reported. Writes JSON after
every stage (partial results survive a time limit) and prints one table last.

    python bench/bench_train.py --data ../shared/data/cifar10 --json train.json
    python bench/bench_train.py --smoke --json /tmp/train_smoke.json       # tiny, CPU, same code path
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from taskgeom.data import DataConfig, load
from taskgeom.store import PredictionStore
from taskgeom.train import PRESETS, TrainConfig, get_method, train
from taskgeom.train.state import load_state
from taskgeom.train.sweep import run_sweep

from _common import commit

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FAST = dict(PRESETS["cifar10-fast-resnet"])  # (learning rates from the command line)
WRN = dict(PRESETS["cifar10-wrn-16-4"])
# The default fast-resnet runs, most telling first (the budget may cut the tail). The preset (stem fitted to
# all classes since 2026-11-27, airplanes alone before; crops padded by reflection), then every piece of the
# fast recipes (Jordan's airbench94) together in their own units (_AIRBENCH: momentum 0.85 with peak 1.5 is
# their effective step, 1.3e-3 their decoupled weight decay per step, decay on BatchNorm shifts and biases
# too, BatchNorm momentum 0.4 in PyTorch's convention (their 0.6 is the weight kept), PyTorch's smaller
# default initialisation with identity filters, the stem bias trained 3 epochs, lookahead, alternating flips,
# a warm-up from 0.2 to a decay ending at 0.07 of the peak), at airbench94's own 10 epochs and then longer:
# on the CPU (2026-11-28, float32, seed 0) those 10 epochs reached 89.48% head accuracy and 90.69% with its
# test-time augmentation on this JPEG copy, against airbench94's published 94.0% on the original CIFAR-10, so
# more epochs within the 8 s are the lever toward 93%; then each piece alone on the preset.
_AIRBENCH = (
    "crop_pad=2:momentum=0.85:weight_decay=1.3e-3:norm_weight_decay=true:bias_lr_scale=64:whiten_bias_epochs=3"
    ":bn_scale=false:bn_momentum=0.4:conv_init=torch-dirac:lookahead=5:flip=alternate"
    ":lr_start=0.2:lr_end=0.07:warmup=0.23"
)
FAST_SWEEP = [
    "12:0.8:crop_pad=2",
    f"10:1.5:{_AIRBENCH}",
    f"16:1.5:{_AIRBENCH}",
    f"20:1.5:{_AIRBENCH}",
    f"24:1.5:{_AIRBENCH}",
    "12:0.8:crop_pad=2:crop_fill=zeros",
    "12:0.8:crop_pad=2:conv_init=torch",
    "12:0.8:crop_pad=2:flip=alternate",
    "12:0.8:crop_pad=2:bn_scale=false:bn_momentum=0.4",
    "12:0.8:crop_pad=2:lookahead=5",
    "12:0.8:crop_pad=2:conv_init=dirac",
    "12:0.8:crop_pad=2:weight_decay=1.5e-3:norm_weight_decay=true",
    "12:0.8:crop_pad=2:lr_start=0.2:lr_end=0.07:warmup=0.23",
    "12:0.8:crop_pad=2:bias_lr_scale=64:whiten_bias_epochs=3",
    f"12:1.5:{_AIRBENCH}",
    f"12:0.8:{_AIRBENCH}",
]
#: WRN-16-4 runs after the probe (TrainConfig fields beside the preset's; "" the preset alone)
WRN_SWEEP = ["", "lookahead=5:norm_weight_decay=true:flip=alternate"]


def _number(text: str):
    """A setting's value from the command line: true / false, int, float, or the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _settings(items) -> dict:
    """TrainConfig fields from ``field=value`` texts."""
    return {key: _number(v) for key, v in (e.split("=", 1) for e in items)}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def smoke_data(root: Path, per_class: int = 30, test_per_class: int = 8) -> str:
    """A tiny CIFAR-like ImageFolder (``<split>/<class>/<image>.png``, 32 x 32, 10 classes)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in range(10):
            d = root / split / CLASSES[c]
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = np.clip(img[..., c % 3].astype(int) + 40 * (c - 4), 0, 255)  # class signal
                Image.fromarray(img).save(d / f"{i}.png")
    return str(root)


def one_run(data, cfg: TrainConfig, root: Path, tag: str) -> dict:
    """Train one run into its own store; seconds, accuracies and the loop's training images per second."""
    store = PredictionStore(root / tag, create=True)
    store.add_eval_set(data.eval_set, data.test[1], class_names=data.classes)
    classes = data.tasks["all"]
    _sync()
    t0 = time.perf_counter()
    traj = train(cfg, classes, data.train, data.test, store, data.eval_set, "all", progress_bar=False)
    _sync()
    seconds = time.perf_counter() - t0
    last = traj.checkpoints[-1]
    metrics = [json.loads(line) for line in (store.root / "metrics" / f"{traj.id:06d}.jsonl").read_text().splitlines()]
    ips = [m["images_per_second"] for m in metrics if m["kind"] == "train"]
    row = {
        "arch": cfg.arch,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "checkpoints_recorded": len(traj.checkpoints),
        "seconds": seconds,
        "train_images_per_second": float(np.median(ips)) if ips else None,
        "epoch_images_per_second": cfg.epochs * len(data.train[1]) / seconds,
        "head_accuracy": last.get("head_accuracy"),
        "imprinted_accuracy": last.get("accuracy"),
        **tta_accuracies(cfg, store.root / "state" / f"{traj.id:06d}.pt", data),
    }
    store.close()
    return row


def _shift(x: torch.Tensor, d: int) -> torch.Tensor:
    """The images moved by ``d`` pixels down and right (``-d``: up and left), edges reflected."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (abs(d),) * 4, mode="reflect")
    o = abs(d) - d
    return padded[..., o : o + h, o : o + w]


@torch.no_grad()
def tta_accuracies(cfg: TrainConfig, state_path: Path, data) -> dict:
    """Test accuracies of the saved final network with test-time augmentation: its logits averaged over the
    image and its mirror (``flip_tta_accuracy``), and over those two at three positions, unmoved (weight 1/2)
    and moved by one pixel up-left and down-right (1/4 each; ``translate_tta_accuracy``), as the fastest
    published CIFAR-10 recipes evaluate."""
    from taskgeom.data.augment import normalize
    from taskgeom.train import resolve_device

    device = resolve_device(cfg.device)
    method = get_method(cfg.method)
    model = method.build(method.resolve(cfg), len(data.classes), 3, device)
    model.load_state_dict(load_state(state_path)["model"])
    model.eval()
    x, y = torch.as_tensor(data.test[0]), torch.as_tensor(data.test[1])
    flip = translate = 0

    def both(xb):  # logits of the images and of their mirrors, summed
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return model(xb).float() + model(xb.flip(-1)).float()

    for i in range(0, len(y), 1000):
        xb, yb = normalize(x[i : i + 1000].permute(0, 3, 1, 2).to(device)), y[i : i + 1000]
        centre = both(xb)
        moved = 0.5 * centre + 0.25 * (both(_shift(xb, -1)) + both(_shift(xb, 1)))
        flip += int((centre.argmax(1).cpu() == yb).sum())
        translate += int((moved.argmax(1).cpu() == yb).sum())
    return {"flip_tta_accuracy": flip / len(y), "translate_tta_accuracy": translate / len(y)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="CIFAR-10: a folder with train.tar.gz and test.tar.gz, or an ImageFolder")
    ap.add_argument("--smoke", action="store_true", help="tiny generated data on the CPU, one epoch per run")
    ap.add_argument("--json", default="train.json", help="where the results go (default: %(default)s)")
    ap.add_argument(
        "--fast",
        default=",".join(FAST_SWEEP),
        help="fast-resnet runs, epochs:lr[:field=value...],... with TrainConfig fields, run in this order while "
        "the budget lasts (default: %(default)s)",
    )
    ap.add_argument("--wrn-seconds", type=float, default=85.0, help="wrn-16-4: seconds the run may take")
    ap.add_argument("--wrn-max-epochs", type=int, default=40, help="wrn-16-4: at most this many epochs")
    ap.add_argument("--wrn-lr", type=float, default=0.4, help="wrn-16-4: peak learning rate")
    ap.add_argument(
        "--wrn-settings",
        default=",".join(WRN_SWEEP),
        help="wrn-16-4 runs, comma-separated, each TrainConfig fields beside the preset's, field=value:field=value "
        "(empty: the preset), run in this order while the budget lasts (default: %(default)r)",
    )
    ap.add_argument("--workers", type=int, default=4, help="concurrent fast-resnet runs (default: %(default)s)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip stages that would not fit (seconds)")
    ap.add_argument("--skip", default="", help="stages to skip: fast,wrn,concurrent")
    return ap


class Session:
    """One benchmark invocation: its options, data, settings common to every run, scratch folder, the
    results so far (written to --json after each run) and the time budget left."""

    def __init__(self, args, data, common: dict, work: Path, out: dict, t_start: float):
        self.args, self.data, self.common, self.work, self.out, self.t_start = args, data, common, work, out, t_start
        self.skip = set(filter(None, args.skip.split(",")))

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def save(self) -> None:
        Path(self.args.json).write_text(json.dumps(self.out, indent=1))


def stage_fast(s: Session) -> None:
    """The fast-resnet runs of --fast, in order while the budget (less what later stages need) lasts."""
    args, out, common = s.args, s.out, s.common
    t0 = time.perf_counter()
    one_run(s.data, TrainConfig(**{**FAST, **common, "epochs": 1, "lr": 0.4, "checkpoints": 2}), s.work, "warm-fast")
    out["fast_warmup_s"] = time.perf_counter() - t0
    # what the later stages need (WRN-16-4: the probe and one run; the concurrency check), kept free
    reserve = 60 + (0 if "wrn" in s.skip else args.wrn_seconds + 60) + (0 if "concurrent" in s.skip else 70)
    reserve = 10 if args.smoke else reserve
    for k, spec in enumerate(args.fast.split(",")):
        epochs, lr, *extra = spec.split(":")
        over = _settings(extra)
        if s.left() < reserve:
            out.setdefault("skipped", []).append(f"fast {spec}")
            continue
        epochs = 1 if args.smoke else int(epochs)
        cfg = TrainConfig(**{**FAST, **common, **over, "epochs": epochs, "lr": float(lr)})
        out["fast"].append({**one_run(s.data, cfg, s.work, f"fast{k}"), "spec": spec, "settings": over})
        print(f"fast-resnet {spec}: {out['fast'][-1]}", flush=True)
        s.save()


def stage_wrn(s: Session) -> None:
    """WRN-16-4: a one-epoch probe, then the runs of --wrn-settings with the epochs that fit --wrn-seconds."""
    args, out, common, data = s.args, s.out, s.common, s.data
    probe = one_run(
        data, TrainConfig(**{**WRN, **common, "epochs": 1, "lr": args.wrn_lr, "checkpoints": 2}), s.work, "probe"
    )
    ips = probe["train_images_per_second"] or probe["epoch_images_per_second"]
    # epochs that fit: training at the probe's rate plus about 5 % for recording 20 checkpoints
    epochs = int(np.clip(args.wrn_seconds * 0.95 * ips / len(data.train[1]), 1, args.wrn_max_epochs))
    epochs = 1 if args.smoke else epochs
    out["wrn_probe"] = probe
    for k, spec in enumerate(args.wrn_settings.split(",")):
        if k and s.left() < (60 if args.smoke else args.wrn_seconds + 30):
            out.setdefault("skipped", []).append(f"wrn {spec}")
            continue
        wrn_over = _settings(spec.split(":")) if spec else {}
        cfg = TrainConfig(**{**WRN, **common, **wrn_over, "epochs": epochs, "lr": args.wrn_lr})
        row = {**one_run(data, cfg, s.work, f"wrn{k}"), "spec": f"{epochs}:{args.wrn_lr}:{spec}".rstrip(":")}
        row["settings"] = wrn_over
        if k == 0:
            out["wrn"] = row  # the preset's run (bench/gpu_summary.py reads it)
        else:
            out.setdefault("wrn_more", []).append(row)
        print(f"wrn-16-4 {spec or 'preset'}: {row}", flush=True)
        s.save()


def sweep_spec(settings: dict, path, models: int) -> dict:
    """A sweep of ``models`` runs (seeds 0 ..) of one run's ``settings`` on all classes of the data at
    ``path``: the arch, method and seed go to the sweep's lists (a sweep refuses them among its fixed
    settings), one CPU per run."""
    fixed = dict(settings)
    arch, method = fixed.pop("arch"), fixed.pop("method", None)
    fixed.pop("seed", None)
    return {
        "data": {"data": "cifar10", "data_path": str(path)},
        "tasks": ["all"],
        "seeds": list(range(models)),
        "archs": [arch],
        **({"methods": [method]} if method is not None else {}),
        "fixed": fixed,
        "resources": {"num_cpus": 1},
    }


def stage_concurrent(s: Session, path) -> None:
    """The best fast-resnet setting as a sweep of --workers runs, with one worker and with --workers."""
    args, out = s.args, s.out
    best = max(out["fast"], key=lambda r: (r["seconds"] <= 8.0, r["head_accuracy"] or 0))
    settings = best.get("settings", {})
    conc_epochs = min(best["epochs"], 12)  # the check measures sharing the GPU, and must fit its reserve
    runs = {}
    spec = sweep_spec({**FAST, **s.common, **settings, "epochs": conc_epochs, "lr": best["lr"]}, path, args.workers)
    for workers in (1, args.workers):
        t0 = time.perf_counter()
        run_sweep(spec, s.work / f"sweep{workers}", workers=workers)
        sec = time.perf_counter() - t0
        runs[workers] = {
            "workers": workers,
            "models": args.workers,
            "seconds": sec,
            "models_per_minute": 60 * args.workers / sec,
            "images_per_second": args.workers * conc_epochs * len(s.data.train[1]) / sec,
        }
        print(f"sweep of {args.workers} fast-resnet runs with {workers} worker(s): {sec:.1f} s", flush=True)
    out["concurrent"] = list(runs.values())
    s.save()


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="taskgeom-bench-train-"))
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    path = smoke_data(work / "data") if args.smoke else args.data
    if not path:
        ap.error("--data is required (or --smoke)")
    out = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "commit": commit(),
        "smoke": args.smoke,
        "fast": [],
    }
    t0 = time.perf_counter()
    data = load(DataConfig(data="cifar10", data_path=path))
    out["data_load_s"] = time.perf_counter() - t0
    print(
        f"data: {len(data.train[1])} train, {len(data.test[1])} test images in {out['data_load_s']:.1f} s", flush=True
    )
    common = dict(device=device, checkpoints=20, imprint_samples=5000, seed=0)
    if args.smoke:
        common.update(checkpoints=3, imprint_samples=100)
    s = Session(args, data, common, work, out, t_start)
    if "fast" not in s.skip:
        stage_fast(s)
    if "wrn" not in s.skip and s.left() > (60 if args.smoke else args.wrn_seconds + 40):
        stage_wrn(s)
    if "concurrent" not in s.skip and out["fast"] and s.left() > 90:
        stage_concurrent(s, path)
    out["total_s"] = time.perf_counter() - t_start
    s.save()
    table(out)


def table(out: dict) -> None:
    print(f"\n{out['device']}  torch {out['torch']}  commit {out['commit']}")
    print(f"{'network':<12} {'settings':<44} {'s/model':>8} {'img/s':>8} {'head acc':>9} {'flip TTA':>9} {'+shift':>7}")
    for r in out["fast"] + ([out["wrn"]] if "wrn" in out else []) + out.get("wrn_more", []):
        ips = r["train_images_per_second"] or 0
        spec = r.get("spec", f"{r['epochs']}:{r['lr']}")
        print(
            f"{r['arch']:<12} {spec:<44} {r['seconds']:>8.2f} {ips:>8.0f} "
            f"{r['head_accuracy'] or 0:>9.4f} {r['flip_tta_accuracy']:>9.4f} {r.get('translate_tta_accuracy', 0):>7.4f}"
        )
    for c in out.get("concurrent", []):
        print(f"concurrent: {c['models']} fast-resnet runs, {c['workers']} worker(s): {c['seconds']:.1f} s")


if __name__ == "__main__":
    main()
