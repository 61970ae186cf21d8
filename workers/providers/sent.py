"""When a request actually left this process: the provider's rolling minute counts from there.

The limiter charges a call to the window when it grants the permit; the provider counts it
when it arrives. Anything between (an SDK's lazy imports on its first call, building the
request, a descheduled process) would let our window free the call's place before the
provider's does. Each adapter's HTTP client reports the moment it hands the request to the
connection, and the permit moves the call's place in the window there (``PermitHandle.sent``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


def _mark(*_args, **_kwargs) -> None:
    _local.at = time.monotonic()


# httpx's request event hook (openai, Azure Vision); botocore's ``before-send`` event (boto3).
httpx_hook = _mark
botocore_hook = _mark


@contextmanager
def measured(permit) -> Iterator[None]:
    """``with measured(permit): sdk_call()``: tells the permit when the last request left."""
    _local.at = None
    try:
        yield
    finally:
        if _local.at is not None:
            permit.sent(_local.at)
