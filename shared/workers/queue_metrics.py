"""The poison queues' length as a metric: the queue-metrics timer (``QUEUE_METRICS_SCHEDULE``, every 5 minutes).

Each poison queue (``mailbox-changes-poison``, ``subscription-tasks-poison``, ``deliveries-poison``) has a
consumer that empties it within seconds (``shared.workers.poison``, ``shared.workers.delivery.handle_poison``),
so a length above 0 at every measurement of half an hour means that consumer is failing or switched off:
the poison-queue-length alert. Azure Storage's own metrics count messages per account, not per queue, hence
this measurement (``poison_queue_length``, dimension ``queue``: one ``customMetrics`` row per queue and
measurement, from the instance that ran the timer: ``record_gauge`` never repeats a value at later exports).
"""

from __future__ import annotations

import asyncio
import logging

from shared.adapters.monitoring import correlated, record_gauge
from shared.adapters.storage import QUEUES, get_store, poison_queue
from shared.contracts import events

log = logging.getLogger(__name__)


async def measure_poison_queues() -> dict[str, int]:
    """Measure and record every poison queue's length; returns them by queue name."""
    with correlated():
        store = get_store()
        names = [poison_queue(name) for name in QUEUES]
        lengths = dict(zip(names, await asyncio.gather(*(store.approximate_length(n) for n in names)), strict=True))
        for name, length in lengths.items():
            record_gauge(events.POISON_QUEUE_LENGTH, length, queue=name)
        waiting = {name: length for name, length in lengths.items() if length}
        if waiting:
            log.warning("poison queues hold messages: %s", waiting)
        return lengths
