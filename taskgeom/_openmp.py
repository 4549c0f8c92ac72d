"""OpenMP's wait policy, settled when taskgeom is imported (the package imports this module first).

OpenMP threads that wait (at a barrier, or for the next parallel region) spin only briefly, then sleep: on
a machine that other jobs also use, a thread that spins for long burns the time slice that the thread it
waits for needs (issue 27), and one that sleeps at once pays a wake-up for every one of training's many
short parallel regions. libgomp (torch's OpenMP on Linux) gets ``GOMP_SPINCOUNT=1000``, about 10 us; other
runtimes ``OMP_WAIT_POLICY=passive``, which libgomp overrides with the count. Measured on 2 Zen 5 cores
(bench_contention.py's training workload, seconds per timing, alone / beside 4 busy processes): sleeping at
once 1.37-1.52 / 4.03-4.23, libgomp's default spin (3 ms) 0.64-0.70 / 10.9-12.0, 1000 spins 0.71-0.86 /
3.25-3.77; the digits main job trained in 31.0-33.1 s sleeping at once and 24.1-25.6 s with 1000 spins (the
same results to the bit: waits do not change arithmetic). taskgeom's own kernels no longer depend on it (the pairwise kernel's threads wait only on
an EventCount that sleeps, progress uses helper threads it never waits for), but torch's operations in training
do: the OpenMP runtime (libgomp, loaded once per process) reads this when torch is first imported, so it
takes effect only when taskgeom is imported before torch, and a choice already made (OMP_WAIT_POLICY, or
GOMP_SPINCOUNT) is kept. ``spins``: torch came first with no choice made (training warns when the
machine is busy).
"""

import os
import sys

_chosen = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)
spins = "torch" in sys.modules and not _chosen
if "torch" not in sys.modules and not _chosen:
    os.environ["GOMP_SPINCOUNT"] = "1000"  # libgomp (torch's on Linux): spin about 10 us, then sleep
    os.environ["OMP_WAIT_POLICY"] = "passive"  # other runtimes: sleep at once (libgomp keeps the count above)
