"""The directory refresh (timer ``DIRECTORY_REFRESH_SCHEDULE``, every 10 minutes): the business dropdown's index.

Re-reads the staff list of every business in the administrators index (``shared.records.business_admins``),
least recently read first, and adds the businesses Graph lists to the app (app-only, where Graph allows it:
the listing's page documents ``Bookings.Read.All`` for applications, revisions of it "Not supported") and
those with flows. Paced at ``READS_PER_SECOND`` staff listings, 4 at a time, for at most ``RUN_SECONDS``: one
read per business is far within Outlook's per-mailbox limits (4 concurrent, 10,000 per 10 minutes; each
business is its own mailbox,
https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits), and the pace leaves Graph's
per-app limits to the triggers. A throttled or unavailable Graph ends the run; the next continues with the
rows read least recently.

So a staff change reaches the dropdown within one schedule period plus one run (at most ``RUN_SECONDS``;
1,000 businesses take 100 s) plus the dropdown's 60 s cache per caller: within 15 minutes with the default
schedule for up to 2,400 businesses (``RUN_SECONDS * READS_PER_SECOND``); a larger tenant's rows are read
over several runs. Azure runs a timer function on one instance at a time (a blob lease), so the instances do
not read twice.

Cost per run: one partition read of the index, one listing, one ``~index:flows`` read, one staff listing per
business and one table transaction per 100 businesses.
"""

from __future__ import annotations

import logging
import time

from shared.adapters.monitoring import correlated
from shared.services import bookings_directory
from shared.services.bookings_directory import StaffReadReport

log = logging.getLogger(__name__)

READS_PER_SECOND = 10.0
# Within the host's functionTimeout (10 min, host.json) with room for the writes.
RUN_SECONDS = 240.0


async def refresh_administrators() -> StaffReadReport:
    """One run of the refresh; returns what it read."""
    with correlated():
        started = time.monotonic()
        report = await bookings_directory.refresh_index(seconds=RUN_SECONDS, per_second=READS_PER_SECOND)
        log.info("directory refresh: %d staff lists read, %d businesses gone, %d left for the next run%s in %.1f s",
                 len(report.read), len(report.gone), len(report.left),
                 " (Graph throttled)" if report.throttled else "", time.monotonic() - started)
        return report
