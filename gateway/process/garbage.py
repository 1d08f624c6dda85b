"""Python's cyclic garbage collector, tuned for a serving process.

Measured with `python -m bench` (cache-cold W50 and W200, one client): with the
interpreter's defaults a collection runs every 700 new container objects, and a request
that parses a few thousand V3 status items sets off several; every so often one of them is
a full collection over every object the process holds. That made p95 2.5x p50 and cost
about a fifth of the CPU of a 200-listing request. Two changes, made once the app has
started:

- `gc.freeze()` moves everything allocated at start (modules, the schema, compiled plans)
  out of the collector's sight: it lives as long as the process anyway;
- the youngest generation is collected after 20,000 allocations instead of 700; cycles are
  rare on the request path, so they wait a little longer, and the number of objects they
  can keep is bounded by the threshold.

Only `gateway serve` and `gateway demo` call this: a test process that builds many apps
must not freeze what it allocates.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (20_000, 50, 100)


def tune_for_serving() -> None:
    """Freeze what the process allocated so far and raise the collection thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
