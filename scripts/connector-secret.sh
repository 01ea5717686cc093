#!/usr/bin/env bash
# The one thing Bicep must not make: the custom connector's client secret. This adds a new secret to the
# connector client app registration and prints it once, for you to paste into the connector's Security
# tab. It is not written to disk, to azd's .env, or to deployment history. Run again to rotate (existing
# secrets are kept until they expire or you remove them in Entra ID).
#
#   scripts/connector-secret.sh [--months N]        new secret, valid N months (default 6)
#   scripts/connector-secret.sh --redirect-uri URL  add the redirect URL Power Automate shows for the connector
#   scripts/connector-secret.sh --secret-only       new secret on stdout alone (scripts/import-connector.sh)
#
# Needs az CLI signed in (az login) as an owner of the app registration or an Application Administrator.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require CONNECTOR_CLIENT_APP_ID

months=6
redirect=""
secret_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --months) months="$2"; shift 2 ;;
    --redirect-uri) redirect="$2"; shift 2 ;;
    --secret-only) secret_only=true; shift ;;
    *) echo "usage: $0 [--months N] [--redirect-uri URL | --secret-only]" >&2; exit 2 ;;
  esac
done

if [ -n "$redirect" ]; then
  case "$redirect" in
    https://*) ;;
    *) echo "error: the redirect URL must be https" >&2; exit 2 ;;
  esac
  mapfile -t uris < <(az ad app show --id "$CONNECTOR_CLIENT_APP_ID" --query "web.redirectUris[]" -o tsv)
  for uri in "${uris[@]}"; do
    if [ "$uri" = "$redirect" ]; then
      echo "ok: ${redirect} is already a redirect URL of the connector client app"
      exit 0
    fi
  done
  az ad app update --id "$CONNECTOR_CLIENT_APP_ID" --web-redirect-uris "${uris[@]}" "$redirect"
  echo "added redirect URL ${redirect}"
  exit 0
fi

end_date=$(date -u -d "+${months} months" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v "+${months}m" +%Y-%m-%dT%H:%M:%SZ)
secret=$(az ad app credential reset --id "$CONNECTOR_CLIENT_APP_ID" --append \
  --display-name "power-automate-connector" --end-date "$end_date" --query password -o tsv)
if [ "$secret_only" = true ]; then
  printf '%s\n' "$secret"
  exit 0
fi
cat <<TEXT
Client id:     ${CONNECTOR_CLIENT_APP_ID}
Client secret: ${secret}
Expires:       ${end_date}
Paste it into the custom connector's Security tab now; it is not shown again.
TEXT
