#!/usr/bin/env bash
# Move flows exported from Power Automate (Export → Package (.zip)) from Microsoft's Bookings connector to this
# app's connector, and list the expressions to review (docs/migration.md):
#
#   scripts/migrate-flows.sh EXPORT.zip --api-name shared_<name>-5f<id> [--output OUT.zip] [--display-name NAME]
#                            [--json] [--dry-run] [--force]
#
# The work is done by python -m scripts.migrate_flow_package (standard library only: the repository's .venv when
# there is one, else python3 3.9 or later). EXPORT.zip is only read; the new package is EXPORT-migrated.zip beside
# it. Exit codes: 0 written (or nothing to move), 1 written but an operation stayed on Microsoft's connector, 2 wrong
# arguments, 3 not a flow package. Runs on stock macOS bash 3.2; scripts/migrate-flows.ps1 is the same for Windows.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
python=python3
if [ -x "$root/.venv/bin/python" ]; then
  python="$root/.venv/bin/python"
fi
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m scripts.migrate_flow_package "$@"
