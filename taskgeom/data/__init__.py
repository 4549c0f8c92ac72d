"""The data layer: datasets, subsets and tasks, augmentations and device-resident loaders. Nothing here
imports training, analysis or presentation code."""

from .augment import color_jitter, cutout, normalize, pad_crop_flip, random_resized_crop
from .beton import FFCVLoader, classes_of, write_beton
from .datasets import DATASETS, DEFAULT_TASKS, Data, DataConfig, balanced_subset, load, load_digits_split
from .images import ImageDataset, default_cache_dir, load_images
from .loader import DeviceLoader
from .tasks import CIFAR10_CLASSES, CIFAR10_TASKS, DIGIT_TASKS, Task, episodes, load_tasks, random_task, union

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_TASKS",
    "DATASETS",
    "DEFAULT_TASKS",
    "DIGIT_TASKS",
    "Data",
    "DataConfig",
    "DeviceLoader",
    "FFCVLoader",
    "ImageDataset",
    "Task",
    "balanced_subset",
    "classes_of",
    "color_jitter",
    "cutout",
    "default_cache_dir",
    "episodes",
    "load",
    "load_digits_split",
    "load_images",
    "load_tasks",
    "normalize",
    "pad_crop_flip",
    "random_resized_crop",
    "random_task",
    "union",
    "write_beton",
]
