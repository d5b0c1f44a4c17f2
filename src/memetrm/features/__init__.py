"""Extract frozen-encoder features once, cache them, and serve them as in-memory sets."""

from memetrm.features.cache import FeatureCache, default_cache_dir
from memetrm.features.extract import encode_field, load_features
from memetrm.features.featureset import FeatureSet

__all__ = ["FeatureCache", "FeatureSet", "default_cache_dir", "encode_field", "load_features"]
