"""The data layer: datasets, subsets and tasks, augmentations and device-resident, streaming and FFCV loaders. Nothing here
imports training, analysis or presentation code."""

from .augment import color_jitter, cutout, normalize, pad_crop_flip, random_resized_crop
from .beton import FFCVLoader, classes_of, write_beton
from .datasets import DATASETS, DEFAULT_TASKS, Data, DataConfig, balanced_subset, load, load_digits_split
from .images import ImageDataset, default_cache_dir, load_images
from .loader import DeviceLoader
from .stream import BetonSource, ImageFolderSource, StreamLoader, resolution_at
from .tasks import (
    CIFAR10_CLASSES,
    CIFAR10_TASKS,
    DIGIT_TASKS,
    EpisodeSampler,
    Task,
    episodes,
    load_tasks,
    random_task,
    union,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_TASKS",
    "BetonSource",
    "DATASETS",
    "DEFAULT_TASKS",
    "DIGIT_TASKS",
    "Data",
    "DataConfig",
    "DeviceLoader",
    "FFCVLoader",
    "ImageDataset",
    "ImageFolderSource",
    "StreamLoader",
    "Task",
    "balanced_subset",
    "classes_of",
    "color_jitter",
    "cutout",
    "default_cache_dir",
    "EpisodeSampler",
    "episodes",
    "load",
    "load_digits_split",
    "load_images",
    "load_tasks",
    "normalize",
    "pad_crop_flip",
    "random_resized_crop",
    "resolution_at",
    "random_task",
    "union",
    "write_beton",
]
