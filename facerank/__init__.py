"""facerank: the shared core of the face-similarity pipeline.

This package sits at the bottom of the dependency graph: the component packages
(``functions``, ``training``, ``inference``) import it, never the other way round.
"""

__version__ = "0.1.0"
