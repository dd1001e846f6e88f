"""``python -m tests.plugins.paused_switch``: the predictor, held inside its next model switch.

A fault test that kills the predictor *during* a switch needs the switch held open: found by
its log line alone, the window (loading a model and a gallery) may close before the kill lands,
and the test would then prove something else. This entry point runs the predictor exactly as
``python -m inference`` does, with one difference: when its follower switches versions (the
pointer moved from the version it serves), it loads the new model and the new gallery as usual,
then, before publishing the pair, creates ``$FACERANK_TEST_PAUSE_DIR/paused`` and waits until
``$FACERANK_TEST_PAUSE_DIR/resume`` exists. Meanwhile it serves the old pair, as in any switch.
A predictor's first load (a start or a restart) is not a switch and never waits.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from inference.__main__ import main
from inference.follower import ServingFollower, ServingPair

MODULE = "tests.plugins.paused_switch"
PAUSE_DIR_ENV = "FACERANK_TEST_PAUSE_DIR"
PAUSED, RESUME = "paused", "resume"
POLL_S = 0.05


def install(folder: Path) -> None:
    """Hold every switch of every follower of this process at ``folder``, as described above."""
    switch = ServingFollower._switch_to

    def held_switch(follower: ServingFollower, ref: object) -> None:
        if follower._pipeline is None:
            switch(follower, ref)  # type: ignore[arg-type]
            return
        publish = follower._publish

        def held_publish(pair: ServingPair) -> None:
            (folder / PAUSED).write_text(pair.model_version, encoding="utf-8")
            while not (folder / RESUME).exists():
                threading.Event().wait(POLL_S)
            publish(pair)

        follower._publish = held_publish
        try:
            switch(follower, ref)  # type: ignore[arg-type]
        finally:
            follower._publish = publish

    ServingFollower._switch_to = held_switch  # type: ignore[method-assign]


if __name__ == "__main__":
    install(Path(os.environ[PAUSE_DIR_ENV]))
    main()
