"""The flow export timer (``BACKUP_SCHEDULE``, default daily at 02:30 UTC): every flow registration to a new blob
of the ``flow-backups`` container (``shared.services.backup`` says what is in it and how it is restored)."""

from __future__ import annotations

from shared.adapters.monitoring import correlated
from shared.services import backup


async def export_flows() -> backup.ExportSummary:
    with correlated():
        return await backup.export_flows()
