"""Datasets: records, layout parsers, checks, the identity sampler, transforms and loaders."""
from vreid.data.check import check_dataset, inspect_dataset
from vreid.data.dataset import (
    BATCH_KEYS,
    ImageDataset,
    build_test_loader,
    build_train_loader,
    camera_index,
    collate_batch,
    load_dataset,
)
from vreid.data.errors import DatasetError, Problem, format_problems
from vreid.data.layouts import LAYOUTS, Layout, load_layout
from vreid.data.records import COLOR_NAMES, TYPE_NAMES, VIEWPOINT_NAMES, ImageRecord, ReidDataset, relabel
from vreid.data.sampler import IdentityBatchSampler
from vreid.data.transforms import SeededTransform, build_test_transform, build_train_transform, build_transforms

__all__ = [
    "BATCH_KEYS", "COLOR_NAMES", "DatasetError", "IdentityBatchSampler", "ImageDataset", "ImageRecord", "LAYOUTS",
    "Layout", "Problem", "ReidDataset", "SeededTransform", "TYPE_NAMES", "VIEWPOINT_NAMES",
    "build_test_loader", "build_test_transform", "build_train_loader", "build_train_transform", "build_transforms",
    "camera_index", "check_dataset", "collate_batch", "format_problems", "inspect_dataset", "load_dataset",
    "load_layout", "relabel",
]
