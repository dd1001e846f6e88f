"""The facerank web page: query a photo in the browser, browse the enrolled identities.

A separate process from the predictor (``python -m inference.web``) so the page can be scaled,
restarted or left out without touching serving; it reaches the predictor server-side over V1,
so the browser talks to one origin and the predictor's address never leaves the machine.
"""

from inference.web.app import create_app

__all__ = ["create_app"]
