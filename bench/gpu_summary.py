"""Gather the GPU run's results (bench/gpu_run.sh) into OUT/pairwise_cuda.json and print one short table.

python bench/gpu_summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def f(value, spec: str) -> str:
    """Formatted, or '-' padded to the width for a missing value."""
    width = int(spec.split(".")[0] or 0)
    return format(value, spec) if isinstance(value, (int, float)) else "-".rjust(width)


#: what the summary keeps of each fp64tc benchmark row
CASE_KEYS = ("m", "N", "C", "method", "config", "seconds", "torch_ref_seconds", "ratio", "max_rel_err",
             "tiled_seconds", "floor_seconds", "fp64_peak_fraction")  # fmt: skip


def summarise(fp: dict, st: dict) -> dict:
    """pairwise_cuda.json: the fp64tc benchmark's cases, tuning and profile, and the streaming row."""
    env = fp.get("env") or st.get("env") or {}
    return {
        "device": env.get("gpu"),
        "commit": env.get("commit"),
        "date": env.get("date"),
        "fp64_tc_peak": fp.get("fp64_tc_peak"),
        "dgemm_flops": fp.get("dgemm_flops"),
        "cases": [{k: r.get(k) for k in CASE_KEYS} for r in fp.get("rows", [])],
        "stream": (st.get("rows") or [None])[0],
        "tuning": fp.get("tuning"),
        "profile": fp.get("profile"),
    }


def print_table(summary: dict) -> None:
    print(
        f"device {summary['device']}  commit {summary['commit']}  DGEMM {(summary['dgemm_flops'] or 0) / 1e12:.1f} TF"
    )
    print(f"{'m':>5} {'N':>6} {'C':>5} {'config':>13} {'s':>8} {'ref s':>7} {'x ref':>6} {'rel err':>8} {'peak':>5}")
    for c in summary["cases"]:
        print(
            f"{c['m']:>5} {c['N']:>6} {c['C']:>5} {str(c['config'] or c['method']):>13} {f(c['seconds'], '8.4f')} "
            f"{f(c['torch_ref_seconds'], '7.3f')} {f(c['ratio'], '6.1f')} {f(c['max_rel_err'], '8.1e')} "
            f"{f(c['fp64_peak_fraction'], '5.0%')}"
        )
    for p in summary["profile"] or []:
        if "main_s" in p:
            print(
                f"  profile {p['m']}x{p['C']} {p['config']}: main {f(p['main_s'], '.4f')} s "
                f"({f(p.get('main_fp64_peak_fraction'), '.0%')} peak, L2 {f(p.get('main_l2_operand_TBps'), '.2f')} TB/s), "
                f"stage {f(p['stage_s'], '.4f')} s, other {f(p['other_s'], '.4f')} s"
            )
    stream = summary["stream"]
    if stream:
        print(
            f"stream {stream['m']}x{stream['N']}x{stream['C']} {f(stream.get('file_GB'), '.1f')} GB: read "
            f"{f(stream.get('read_s'), '.2f')} s, in-memory {f(stream.get('in_memory_s'), '.2f')} s, streamed "
            f"{f(stream.get('stream_s'), '.2f')} s, ratio {f(stream.get('ratio_vs_max(read,in_memory)'), '.2f')}, "
            f"max rel diff {f(stream.get('max_rel_diff_vs_in_memory'), '.1e')}"
        )
    else:
        print("stream: no result")


def main():
    out = Path(sys.argv[1])
    summary = summarise(load(out / "fp64tc.json") or {}, load(out / "stream_cuda.json") or {})
    (out / "pairwise_cuda.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)


if __name__ == "__main__":
    main()
