#!/usr/bin/env bash
# The one thing Bicep must not make: the custom connector's client secret. This adds a new secret to the
# connector client app registration and prints it once, for you to paste into the connector's Security
# tab. It is not written to disk, to azd's .env, or to deployment history; only its expiry is recorded
# (CONNECTOR_CREDENTIAL_EXPIRES_AT, see below). To replace the connector's secret in one go (new secret, connector
# updated, old secret removed after an overlap): scripts/rotate-connector-secret.sh.
#
#   scripts/connector-secret.sh [--months N]           new secret, valid N months (default 6)
#   scripts/connector-secret.sh --secret-only          new secret on stdout alone (import / rotate scripts)
#   scripts/connector-secret.sh --redirect-uri URL     add the redirect URL Power Automate shows for the connector
#   scripts/connector-secret.sh --adopt-redirect-uris  record the redirect URLs the app has now (upgrades)
#
# Redirect URLs are declared state: infra/entra/graph.bicep sets the connector client's web.redirectUris to
# the global URL plus the azd environment value CONNECTOR_REDIRECT_URIS (comma-separated) on every provision,
# and removes any other. --redirect-uri therefore records the URL there (azd env set) as well as adding it to
# the app registration now; --adopt-redirect-uris records the ones an earlier version of this script added
# out of band, so the next `azd provision` keeps them (infra/README.md, "Upgrading").
#
# Secret expiry: recorded as the azd environment value CONNECTOR_CREDENTIAL_EXPIRES_AT (Bicep makes it the
# Function App's app setting on every provision) and set on the app at once; the app's daily check emits
# ConnectorSecretExpiring from 30 days before, and the connector-secret-expiring alert fires on it.
#
# Needs az CLI signed in (az login) as an owner of the app registration or an Application Administrator, and
# azd with this environment selected. Runs on stock macOS bash 3.2.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require CONNECTOR_CLIENT_APP_ID

# Power Automate and Power Apps redirect every connector's OAuth sign-in here; infra/entra/graph.bicep declares it.
global_redirect="https://global.consent.azure-apim.net/redirect"
months=6
redirect=""
adopt=false
secret_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --months) months="$2"; shift 2 ;;
    --redirect-uri) redirect="$2"; shift 2 ;;
    --adopt-redirect-uris) adopt=true; shift ;;
    --secret-only) secret_only=true; shift ;;
    *) echo "usage: $0 [--months N] [--secret-only | --redirect-uri URL | --adopt-redirect-uris]" >&2; exit 2 ;;
  esac
done
case "$months" in
  ''|*[!0-9]*) echo "error: --months takes a whole number of months" >&2; exit 2 ;;
esac

# Records the redirect URLs (the declared ones, those the app has now, and "$1" when given) in the azd
# environment, then makes them the app registration's: the same list the next provision declares.
record_redirects() {
  local new="${1:-}" declared current list uri
  if ! command -v azd >/dev/null 2>&1; then
    echo "error: azd is not installed: the redirect URLs must be recorded in the azd environment" >&2
    echo "  (CONNECTOR_REDIRECT_URIS), or the next azd provision removes them." >&2
    exit 1
  fi
  declared=$(azd env get-value CONNECTOR_REDIRECT_URIS 2>/dev/null || true)
  current=$(az ad app show --id "$CONNECTOR_CLIENT_APP_ID" --query "web.redirectUris[]" -o tsv)
  list=""
  set -f  # URLs may hold ? and *: never globbed
  # One URL a line; every source in order, each URL once, the global one left to Bicep.
  for uri in $(printf '%s\n%s\n%s\n' "$declared" "$current" "$new" | tr ',' '\n'); do
    case "$uri" in
      https://*) ;;
      *) continue ;;  # anything else (an azd message, a stray value) is no redirect URL
    esac
    if [ "$uri" = "$global_redirect" ] || printf '%s\n' "$list" | grep -qxF -- "$uri"; then
      continue
    fi
    list="${list}${list:+
}${uri}"
  done
  azd env set CONNECTOR_REDIRECT_URIS "$(printf '%s' "$list" | tr '\n' ',')"
  # shellcheck disable=SC2086 # the URLs are whitespace-free by construction (split on whitespace above)
  az ad app update --id "$CONNECTOR_CLIENT_APP_ID" --web-redirect-uris "$global_redirect" $list
  echo "redirect URLs of the connector client app (recorded in CONNECTOR_REDIRECT_URIS, kept by every provision):"
  # shellcheck disable=SC2086 # one URL a word, as above
  printf '    %s\n' "$global_redirect" $list
  set +f
}

# Records the new secret's expiry "$1" where the app's daily check reads it: the azd environment (which Bicep
# makes the app setting on every provision) and the app setting itself, now. Messages go to stderr: with
# --secret-only stdout carries the secret alone. A failure here is reported, not fatal: the secret exists.
record_expiry() {
  local ok=true
  if command -v azd >/dev/null 2>&1 && azd env set CONNECTOR_CREDENTIAL_EXPIRES_AT "$1" >/dev/null; then :; else ok=false; fi
  if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ] \
      && az functionapp config appsettings set --name "$AZURE_FUNCTION_APP_NAME" \
        --resource-group "$AZURE_RESOURCE_GROUP" --settings "CONNECTOR_CREDENTIAL_EXPIRES_AT=$1" --output none; then :
  else ok=false; fi
  if [ "$ok" = true ]; then
    echo "recorded: the secret expires ${1} (CONNECTOR_CREDENTIAL_EXPIRES_AT; warned from 30 days before)" >&2
  else
    echo "warning: could not record the expiry everywhere; run: azd env set CONNECTOR_CREDENTIAL_EXPIRES_AT ${1}" >&2
    echo "  then azd provision, or the app cannot warn before the secret expires." >&2
  fi
}

# N months from now, UTC, as ISO 8601: BSD date (macOS) takes -v, GNU date (Linux) -d.
months_from_now() {
  date -u -v "+${1}m" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -d "+${1} months" +%Y-%m-%dT%H:%M:%SZ
}

if [ -n "$redirect" ]; then
  case "$redirect" in
    https://*) ;;
    *) echo "error: the redirect URL must be https" >&2; exit 2 ;;
  esac
  case "$redirect" in
    *[[:space:],]*) echo "error: the redirect URL must not contain spaces or commas" >&2; exit 2 ;;
  esac
  record_redirects "$redirect"
  exit 0
fi
if [ "$adopt" = true ]; then
  record_redirects
  exit 0
fi

end_date=$(months_from_now "$months")
secret=$(az ad app credential reset --id "$CONNECTOR_CLIENT_APP_ID" --append \
  --display-name "power-automate-connector" --end-date "$end_date" --query password -o tsv)
record_expiry "$end_date"
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
