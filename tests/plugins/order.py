"""``--order reverse`` or ``--order shuffle[:SEED]``: run the suite in another order.

Tests must pass alone and in any order; this option is how that is checked without a plugin
from outside. Tests stay grouped by module (module-scoped servers are started once either way):
``reverse`` reverses the modules and the tests in each, ``shuffle`` shuffles both with a seed
that the header prints, so a failing order can be replayed.

Under pytest-xdist (``make test``: ``-n 2 --dist loadfile``) the controller hands out whole
modules. In file order it hands out the modules with the most tests first (xdist's default
``--loadscope-reorder``), which keeps both workers busy to the end. Another order turns that
off, so the modules are handed out in the order chosen and each worker runs its share in that
order with the tests in each reversed or shuffled; which worker gets which module still depends
on timing. The shuffle seed is the controller's, passed to each worker, since workers that
shuffled differently would collect different orders.
"""

from __future__ import annotations

import random
from itertools import groupby
from typing import Any

import pytest

SEED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--order",
        default="file",
        help="file (default), reverse, or shuffle[:SEED]: the order tests run in",
    )


def pytest_configure(config: pytest.Config) -> None:
    mode, _, seed = config.getoption("--order").partition(":")
    if mode not in ("file", "reverse", "shuffle"):
        raise pytest.UsageError(f"--order must be file, reverse or shuffle[:SEED], not {mode!r}")
    if mode != "file" and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # pytest-xdist: hand modules out in this order
    if mode == "shuffle":
        worker_input = getattr(config, "workerinput", {})
        if seed:
            config.stash[SEED] = int(seed)
        elif "order_seed" in worker_input:
            config.stash[SEED] = int(worker_input["order_seed"])
        else:
            config.stash[SEED] = random.SystemRandom().randrange(10**6)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, per worker it starts: the same shuffle seed for each."""
    if SEED in node.config.stash:
        node.workerinput["order_seed"] = node.config.stash[SEED]


def pytest_report_header(config: pytest.Config) -> str:
    if SEED in config.stash:
        return f"order: shuffle:{config.stash[SEED]}"
    return f"order: {config.getoption('--order')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mode = config.getoption("--order").partition(":")[0]
    if mode == "file":
        return
    modules = [list(group) for _, group in groupby(items, key=lambda item: item.path)]
    if mode == "reverse":
        ordered = [list(reversed(module)) for module in reversed(modules)]
    else:
        rng = random.Random(config.stash[SEED])  # noqa: S311 (an order, not a secret)
        rng.shuffle(modules)
        ordered = [rng.sample(module, len(module)) for module in modules]
    items[:] = [item for module in ordered for item in module]
