#!/usr/bin/env bash
# Replaces the custom connector's client secret before it expires (the connector-secret-expiring alert warns
# 30 days ahead), in two steps with an overlap between them:
#
#   scripts/rotate-connector-secret.sh [--months N]   1. a new secret (its expiry recorded), the connector updated
#   scripts/rotate-connector-secret.sh --remove-old   2. after the overlap: every older connector secret removed
#                      [--overlap-hours H]               (refused until the newest is H hours old; default 24)
#
# Step 1 updates the connector with paconn when it was imported with paconn (.azure/<env>/connector/settings.json:
# `paconn update --secret`, the secret never printed); otherwise (pac takes no secret, or a portal import) it shows
# the new secret once, to paste into the connector's Security tab ("Update connector"). Until step 2 both secrets
# are valid, so connections keep signing in whichever the connector holds; step 2 removes only this connector's
# secrets (display name power-automate-connector), never the newest. Entra ID: an app may hold several secrets at
# once, each with its own end date (https://learn.microsoft.com/entra/identity-platform/how-to-add-credentials).
# Needs az CLI signed in as an owner of the app registration or an Application Administrator. Runs on stock macOS
# bash 3.2; scripts/rotate-connector-secret.ps1 is the same for Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require CONNECTOR_CLIENT_APP_ID

months=6
remove_old=false
overlap_hours="${ROTATION_OVERLAP_HOURS:-24}"
while [ $# -gt 0 ]; do
  case "$1" in
    --months) months="$2"; shift 2 ;;
    --remove-old) remove_old=true; shift ;;
    --overlap-hours) overlap_hours="$2"; shift 2 ;;
    *) echo "usage: $0 [--months N] | --remove-old [--overlap-hours H]" >&2; exit 2 ;;
  esac
done
case "$overlap_hours" in
  ''|*[!0-9]*) echo "error: --overlap-hours takes a whole number" >&2; exit 2 ;;
esac
name="power-automate-connector"

if [ "$remove_old" = true ]; then
  # keyId, start; the newest first (ISO 8601 UTC times sort as text).
  secrets=$(az ad app credential list --id "$CONNECTOR_CLIENT_APP_ID" \
    --query "[?displayName=='${name}'].[startDateTime, keyId]" -o tsv | sort -r)
  newest_start=$(printf '%s\n' "$secrets" | head -n 1 | cut -f 1)
  if [ -z "$newest_start" ]; then
    echo "error: the connector client app has no ${name} secret" >&2
    exit 1
  fi
  # H hours ago, UTC: BSD date (macOS) takes -v, GNU date (Linux) -d.
  cutoff=$(date -u -v "-${overlap_hours}H" +%FT%TZ 2>/dev/null || date -u -d "-${overlap_hours} hours" +%FT%TZ)
  if [ "${newest_start%%.*}" \> "$cutoff" ]; then
    echo "not yet: the newest secret was made at ${newest_start}, less than ${overlap_hours} hours ago. Check that flows" >&2
    echo "  still sign in (the connector holds the new secret), then run this again after the overlap." >&2
    exit 1
  fi
  removed=0
  for key in $(printf '%s\n' "$secrets" | sed -n '2,$p' | cut -f 2); do
    az ad app credential delete --id "$CONNECTOR_CLIENT_APP_ID" --key-id "$key"
    removed=$((removed + 1))
  done
  echo "removed ${removed} older connector secret(s); the one made at ${newest_start} stays."
  exit 0
fi

settings=".azure/${AZURE_ENV_NAME:-default}/connector/settings.json"
if [ -f "$settings" ] && command -v paconn >/dev/null 2>&1; then
  echo "1. A new secret, handed to paconn update (${settings}):"
  ./scripts/import-connector.sh --update --tool paconn
else
  echo "1. A new secret. Paste it into the connector's Security tab (Power Automate, Custom connectors, Edit),"
  echo "   then select Update connector:"
  ./scripts/connector-secret.sh --months "$months" | sed -n '2,3p'
fi
cat <<TEXT
2. Both secrets are valid now. After ${overlap_hours} hours, once flows have signed in with the new one, remove the old:
       scripts/rotate-connector-secret.sh --remove-old
TEXT
