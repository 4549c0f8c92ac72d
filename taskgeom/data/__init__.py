"""Datasets, tasks and device-resident loaders for producing trajectories."""

from .beton import FFCVLoader, classes_of, write_beton
from .images import ImageDataset, default_cache_dir, load_images
from .loader import DeviceLoader, normalize
from .tasks import CIFAR10_CLASSES, CIFAR10_TASKS, Task, episodes, load_tasks, union

__all__ = ["CIFAR10_CLASSES", "CIFAR10_TASKS", "DeviceLoader", "FFCVLoader", "classes_of", "write_beton", "ImageDataset", "Task", "default_cache_dir",
           "episodes", "load_images", "load_tasks", "normalize", "union"]
