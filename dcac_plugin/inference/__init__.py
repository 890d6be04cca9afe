"""Using a trained model: feature extraction, gallery search, ranked-list pictures, ONNX export."""

from dcac_plugin.inference.extractor import FeatureExtractor, list_images, load_features, run_weights, save_features

__all__ = ["FeatureExtractor", "list_images", "load_features", "run_weights", "save_features"]
