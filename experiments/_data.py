"""Data options shared by the experiment scripts: built-in digits (default) or real CIFAR-10."""

from __future__ import annotations

#: the two disjoint sub-tasks used where an experiment needs them, per dataset (on CIFAR-10 the paper's
#: binary tasks of Results 6 and 7)
SUBTASKS = {"digits": ("0-4", "5-9"), "cifar10": ("airplane-automobile", "bird-cat")}


def add_data_arguments(ap) -> None:
    ap.add_argument("--data", default="digits", choices=["digits", "cifar10"])
    ap.add_argument("--data-path", default="../shared/data/cifar10", help="CIFAR-10 folder or tarballs")
    ap.add_argument("--train-per-class", type=int, default=0, help="CIFAR-10: training images per class (0: all)")
    ap.add_argument("--eval-samples", type=int, default=0, help="CIFAR-10: evaluation images (0: all 10,000)")
    ap.add_argument("--arch", default="small-cnn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--imprint-samples", type=int, default=5000,
                    help="training images used to imprint each checkpoint onto the union task")


def load(args):
    """(train, test, class names, tasks, evaluation set name, task-name translation) for ``args``."""
    from taskgeom.picture import PictureConfig, load_data

    cfg = PictureConfig(data=args.data, data_path=args.data_path, train_per_class=args.train_per_class,
                        eval_samples=args.eval_samples)
    tr, te, classes, tasks, eval_set = load_data(cfg)
    rename = dict(zip(SUBTASKS["digits"], SUBTASKS[args.data]))
    return tr, te, classes, tasks, eval_set, (lambda t: rename.get(t, t))
