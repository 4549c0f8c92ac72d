"""OpenMP's wait policy, settled when taskgeom is imported (the package imports this module first).

OpenMP threads that wait (at a barrier, or for the next parallel region) sleep instead of spinning: on a
machine that other jobs also use, a spinning thread burns the time slice that the thread it waits for
needs (issue 27). taskgeom's own kernels no longer depend on it (the pairwise kernel's threads wait only on
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
    os.environ["OMP_WAIT_POLICY"] = "passive"
