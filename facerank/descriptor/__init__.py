"""Pretrained face descriptors ported from TF.js weights, and the reader for those weights.

Only the NumPy-level reader is imported here: :mod:`facerank.descriptor.recognition` imports
Keras (seconds), so it is loaded only by code that builds or converts a network.
"""

from facerank.descriptor.tfjs import TfjsWeightsError, read_tfjs_weights

__all__ = ["TfjsWeightsError", "read_tfjs_weights"]
