"""PredictionStore: memory-mapped prediction files with an SQLite manifest.

One public object, :class:`PredictionStore`, in front of three parts, each a module of its own:

* :mod:`.manifest`: the SQLite manifest (schema version in ``PRAGMA user_version``, migrated once at open;
  write transactions; read-only opens that always show the last committed state);
* :mod:`.segments`: the raw per-trajectory data files (checked appends, checksums, verify, file names
  confined to the store's ``data/`` folder);
* :mod:`.importers`: trajectories recorded elsewhere (the paper authors' HDF5 files).
"""

from .errors import ConfigMismatchError, StoreError
from .predictions import EvalSet, PredictionStore, Trajectory, trajectory_name

__all__ = ["PredictionStore", "Trajectory", "EvalSet", "StoreError", "ConfigMismatchError", "trajectory_name"]
