#!/usr/bin/env bash
# Imports the custom connector into Power Automate in one command, with this deployment's values:
#
#   scripts/import-connector.sh [--env POWER_PLATFORM_ENVIRONMENT_ID]
#
# It fills connector/ in (scripts/connector-files.sh: the Function App's host, the deployment's tenant, the
# connector client id and the API's scope from the azd environment), makes a new client secret for the
# connector client app (scripts/connector-secret.sh; handed to paconn, never printed or stored), and runs
# `paconn create` (the Power Platform connector CLI: pip install paconn, then paconn login once). The
# connector is named by the definition's info.title, which Power Platform limits to 30 characters.
# Without --env, paconn asks which environment. scripts/import-connector.ps1 is the same for Windows.
#
# The connector's redirect URL exists only once the connector does: the last step printed adds it.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require CONNECTOR_CLIENT_APP_ID

env_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env|-e) env_args=(--env "$2"); shift 2 ;;
    *) echo "usage: $0 [--env POWER_PLATFORM_ENVIRONMENT_ID]" >&2; exit 2 ;;
  esac
done
if ! command -v paconn >/dev/null 2>&1; then
  echo "error: paconn is not installed: pip install paconn, then paconn login" >&2
  exit 1
fi

out=".azure/${AZURE_ENV_NAME:-default}/connector"
./scripts/connector-files.sh "$out" >/dev/null
secret=$(./scripts/connector-secret.sh --secret-only)
# paconn writes settings.json (the new connector's id, for `paconn update`) into its working directory.
(cd "$out" && paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json \
  --secret "$secret" --overwrite-settings "${env_args[@]}")
unset secret

cat <<TEXT
Imported. Last step: open the connector in Power Automate (Custom connectors, then its Security tab), copy
the Redirect URL shown there and add it to the connector client app:
    scripts/connector-secret.sh --redirect-uri <redirect URL>
TEXT
