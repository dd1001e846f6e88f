"""The ``facerank`` command line. Modules here import no TensorFlow at start-up."""
