"""Data options shared by the experiment scripts: built-in digits (default) or real CIFAR-10, through
taskgeom's one data layer (taskgeom.data.datasets), so that experiments, ``taskgeom train`` and
``taskgeom picture`` name and share evaluation sets the same way."""

from __future__ import annotations

from taskgeom import config
from taskgeom.data import datasets
from taskgeom.imprinting import HEADS

#: the two disjoint sub-tasks used where an experiment needs them, per dataset (on CIFAR-10 the paper's
#: binary tasks of Results 6 and 7)
SUBTASKS = {"digits": ("0-4", "5-9"), "cifar10": ("airplane-automobile", "bird-cat")}


def add_data_arguments(ap) -> None:
    config.add_options(ap, datasets.DataConfig, group="data")
    ap.set_defaults(data_path="../shared/data/cifar10")
    ap.add_argument("--arch", default="small-cnn", help="network (default: %(default)s)")
    ap.add_argument("--batch-size", type=config.positive_int, default=64, help="samples per batch (default: 64)")
    ap.add_argument(
        "--imprint-samples",
        type=config.positive_int,
        default=5000,
        help="training images used to imprint each checkpoint onto the union task (default: 5000)",
    )
    ap.add_argument(
        "--imprint-head",
        choices=HEADS,
        default="cosine-ml",
        help="imprinted head: cosine (eq. 7 as printed), cosine-ml (maximum-likelihood temperature) or "
        "euclidean (the authors' code) (default: %(default)s)",
    )


def load(args):
    """(train, test, class names, tasks, evaluation set name, task-name translation) for ``args``."""
    data = datasets.load(config.from_args(datasets.DataConfig, args))
    rename = dict(zip(SUBTASKS["digits"], SUBTASKS[args.data]))
    return data.train, data.test, data.classes, data.tasks, data.eval_set, (lambda t: rename.get(t, t))
