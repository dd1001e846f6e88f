"""Distributed TensorFlow training (MultiWorkerMirroredStrategy, triplet loss), evaluation and
promotion of embedding models. Built by the retraining issue; empty until then."""
