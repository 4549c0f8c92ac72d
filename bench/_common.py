"""Shared benchmark helpers: environment record, timing, table and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch


def commit() -> str:
    if os.environ.get("TASKGEOM_COMMIT"):  # given by the caller (a device copy's git may describe another tree)
        return os.environ["TASKGEOM_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return os.environ.get("TASKGEOM_COMMIT", "unknown")


def environment(device: str) -> dict:
    import taskgeom as tg

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "build": tg.build_info(),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    info: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """Model name, with the x86 family/model numbers (a KVM guest may report only "AMD EPYC")."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return name


def fp64_peak_per_core() -> dict:
    """FP64 peak of one core from /proc/cpuinfo flags and clock, with the assumption it rests on.

    flops/cycle = FMA pipes x doubles per full-width FMA x 2. Assumed: 2 FMA pipes on every x86 core here;
    AVX-512 with full-width (512-bit) FMA units on Intel server parts and AMD Zen 5 server parts (family 26),
    so 2 x 8 x 2 = 32; AMD Zen 4 (family 25) executes a 512-bit FMA as two 256-bit halves, so 2 x 4 x 2 = 16,
    as for AVX2 + FMA anywhere. The clock is the "cpu MHz" the kernel reports (a KVM guest sees the nominal
    clock, not boost), so the fraction of peak is an upper estimate when the core boosts.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    ghz = float(info.get("cpu MHz", "nan")) / 1e3
    vendor = info.get("vendor_id", "")
    family = int(info.get("cpu family", "0") or 0)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
        flops, basis = 32, "AVX-512, 2 full-width FMA pipes x 8 doubles x 2"
    elif "fma" in flags:
        flops, basis = 16, "256-bit FMA datapath (AVX2, or AVX-512 split in halves on Zen 4): 2 x 4 x 2"
    else:
        flops, basis = 4, "SSE2: 2 x 2 doubles (no FMA)"
    return {"ghz": ghz, "flops_per_cycle": flops, "gflops": flops * ghz, "basis": basis}


def timeit(fn, device: str, repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``repeat`` calls after ``warmup`` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def report(payload: dict, path: str | None) -> None:
    """Print ``payload`` as JSON without its ``env`` (the machine's description), and write all of it to
    ``path`` (when given)."""
    print(json.dumps({k: v for k, v in payload.items() if k != "env"}, indent=1, default=str))
    write_json(path, payload)


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}")
