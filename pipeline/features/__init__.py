"""Frame-level audio features from one shared STFT, configured by catalog.yaml's ``features:``.

>>> from pipeline.features import FeaturesConfig, build_feature_set
>>> fs = build_feature_set(FeaturesConfig(), 16000)   # {log_mel: {}} by default
>>> fs.frame_shapes()
{'log_mel': (80,)}

See docs/features.md for every feature, its parameters and the librosa function it equals.
"""

from pipeline.features.config import FeaturesConfig
from pipeline.features.feature_set import FeatureSet, build_feature_set, check
from pipeline.features.registry import REGISTRY

__all__ = ["FeaturesConfig", "FeatureSet", "build_feature_set", "check", "REGISTRY"]
