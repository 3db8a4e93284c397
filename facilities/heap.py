"""The garbage collector, set once start-up is done.

Why and what it measured: docs/performance.md, "The collector, settled once start-up is done".
"""

import gc

# Container objects allocated between two collections of the youngest generation (CPython's
# default is 700). A ten-port message decodes into ~40 tracked objects that live until its
# batch commits (up to 1,000 messages, ~50 ms): with the default, a young collection ran every
# ~20 messages and each collection of the middle generation walked the whole batch in hand.
# Measured on the 10-port backlog, this and the freeze below took the service from 460-510 to
# 290-450 CPU µs per message (runs side by side on a loaded machine).
YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Collect what start-up left, move everything alive now (modules, models, the site) out
    of the collector's sight for good, and let young objects live longer before a collection."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
