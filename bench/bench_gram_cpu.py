"""The C++ pairwise kernel against a dgemm route on the CPU (torch.bmm on square-root panels, the full
matrix, then -log per sample), one thread, for a few class counts: is a BLAS Gram worth taking for large C?

    python bench/bench_gram_cpu.py            # m = 200 models, N x C = 200,000 per model

Prints seconds, GFLOP/s on the work each does (the kernel one triangle, the dgemm the full matrix) and the
largest absolute error of each against the float64 reference (backend="torch")."""

import time

import numpy as np
import torch

import taskgeom as tg


def gram(a: torch.Tensor, chunk_bytes: int = 16 << 20) -> torch.Tensor:
    """Mean over samples of -log sum_c sqrt(p_ic p_jc), by one batched dgemm per sample chunk."""
    s = (a / a.sum(-1, keepdim=True)).clamp_min(0).sqrt()
    m, n, _ = s.shape
    out = torch.zeros(m, m, dtype=torch.float64)
    step = max(1, chunk_bytes // (8 * m * m))
    for n0 in range(0, n, step):
        x = s[:, n0 : n0 + step].transpose(0, 1).contiguous()  # (samples, m, C)
        out -= torch.bmm(x, x.transpose(1, 2)).clamp_min(1e-30).log().sum(0)
    out /= n
    out.fill_diagonal_(0.0)
    return torch.triu(out, 1) + torch.triu(out, 1).T


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for c in (10, 100, 316, 1000):
        m, n = 200, max(200, 200_000 // c)
        x = rng.random((m, n, c))
        x /= x.sum(-1, keepdims=True)
        ref = tg.pairwise_distances(x, backend="torch")
        t0 = time.perf_counter()
        d_cpu = tg.pairwise_distances(x, backend="cpu", threads=1)
        t1 = time.perf_counter()
        d_gram = gram(torch.as_tensor(x)).numpy()
        t2 = time.perf_counter()
        flops = m * m * n * c  # one triangle: m^2 / 2 pairs x 2 flops per class
        print(
            f"C={c} N={n}: kernel {t1 - t0:.3f} s ({flops / (t1 - t0) / 1e9:.1f} GFLOP/s), dgemm {t2 - t1:.3f} s "
            f"({2 * flops / (t2 - t1) / 1e9:.1f} GFLOP/s on the full matrix); max error kernel "
            f"{np.abs(d_cpu - ref).max():.2e}, dgemm {np.abs(d_gram - ref).max():.2e}"
        )


if __name__ == "__main__":
    main()
