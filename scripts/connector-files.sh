#!/usr/bin/env bash
# The custom connector's two files (connector/) with this deployment's values filled in, for the
# command-line import (paconn) or to upload in the portal:
#
#   scripts/connector-files.sh [OUT_DIR]     default .azure/<env>/connector (git ignores .azure/)
#
# apiProperties.json signs users in against the deployment's tenant (AZURE_TENANT_ID): both app
# registrations are single-tenant, and Entra refuses "common" for them (AADSTS50194). The swagger gets the
# Function App's host name, and its OAuth URLs the tenant too. Values come from the azd environment (none
# is a secret); a placeholder left unfilled stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require FUNCTION_URL AZURE_TENANT_ID CONNECTOR_CLIENT_APP_ID API_APP_ID_URI API_SCOPE

out="${1:-.azure/${AZURE_ENV_NAME:-default}/connector}"
mkdir -p "$out"
host="${FUNCTION_URL#https://}"
host="${host%%/*}"

# sed replacement text: escape the delimiter, & and backslashes.
esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

sed -e "s|<AZURE_TENANT_ID>|$(esc "$AZURE_TENANT_ID")|g" \
    -e "s|<CONNECTOR_CLIENT_APP_ID>|$(esc "$CONNECTOR_CLIENT_APP_ID")|g" \
    -e "s|<API_APP_ID_URI>|$(esc "$API_APP_ID_URI")|g" \
    -e "s|<API_SCOPE>|$(esc "$API_SCOPE")|g" \
    connector/apiProperties.json >"$out/apiProperties.json"
sed -e "s|^  \"host\": \"[^\"]*\"|  \"host\": \"$(esc "$host")\"|" \
    -e "s|\(https://login\.[a-z.]*/\)common/|\1$(esc "$AZURE_TENANT_ID")/|g" \
    connector/apiDefinition.swagger.json >"$out/apiDefinition.swagger.json"

if grep -n '<[A-Z_]*>' "$out/apiProperties.json" "$out/apiDefinition.swagger.json"; then
  echo "error: placeholders left unfilled (above)" >&2
  exit 1
fi
cat <<TEXT
Wrote ${out}/apiDefinition.swagger.json (host ${host}) and ${out}/apiProperties.json (tenant ${AZURE_TENANT_ID}).
Import them:
    paconn create --api-def ${out}/apiDefinition.swagger.json --api-prop ${out}/apiProperties.json --secret "<connector client secret>"
TEXT
