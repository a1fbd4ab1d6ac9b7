"""Data: preprocessing recipes, samples and their streams, labelled datasets, label files, the prep cache.

The names most used are re-exported here (``from harness.data import get_recipe``).
"""

from harness.data.recipes import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, RECIPES, Recipe, get_recipe, golden_images
from harness.data.samples import Sample, batches, preprocessed, synthetic_dataset

__all__ = ["IMAGE_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "RECIPES", "Recipe", "get_recipe", "golden_images",
           "Sample", "batches", "preprocessed", "synthetic_dataset"]
