#!/bin/sh
# azd postprovision hook: says what Bicep could not do and what to do next. It never prints or stores a
# secret. The connector's client secret is made on demand (scripts/connector-secret.sh, or in one go with
# the import: scripts/import-connector.sh).
#
# On the first provision of an environment its managed identity is new, and Bicep leaves its Graph
# application permissions out (Entra may not have replicated it; infra/main.bicep,
# previousManagedIdentityPrincipalId): when the deployer may make the admin grants, this runs
# scripts/grant-graph-permissions.sh, which waits for the replication. A grant that still fails, or a
# deployer without the rights (ASSIGN_GRAPH_APP_ROLES=false), ends with the exact commands for an
# administrator; the app is deployed either way. scripts/postprovision.ps1 is the same for Windows.
set -eu
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require FUNCTION_URL NOTIFICATION_URL API_APP_CLIENT_ID API_SCOPE CONNECTOR_CLIENT_APP_ID

cat <<TEXT

Bookings appointment triggers: provisioned.
  Function App           ${AZURE_FUNCTION_APP_NAME:-}  (${FUNCTION_URL})
  Health                 ${HEALTH_URL:-${FUNCTION_URL}/api/health}
  Graph notifications    ${NOTIFICATION_URL}
  Graph lifecycle        ${LIFECYCLE_URL:-}
  API (token audience)   ${API_APP_CLIENT_ID}   scope ${API_SCOPE}
  Connector client app   ${CONNECTOR_CLIENT_APP_ID}
TEXT

admin_commands() {
  cat <<TEXT
A Privileged Role Administrator or Global Administrator runs, once, in a clone of this repository with the
same azd environment (azd env select ${AZURE_ENV_NAME:-<env>}) and signed in with az login:
    scripts/grant-graph-permissions.sh          (Windows: scripts/grant-graph-permissions.ps1)
It grants the managed identity ${MANAGED_IDENTITY_PRINCIPAL_ID:-<MANAGED_IDENTITY_PRINCIPAL_ID>} its Microsoft Graph
application permissions and gives the tenant-wide consents, the same as:
    az ad app permission admin-consent --id ${CONNECTOR_CLIENT_APP_ID}
    az ad app permission admin-consent --id ${API_APP_CLIENT_ID}
Until then the app cannot read Bookings or subscribe to calendars (Graph answers 403), and the trigger's
business list fails (Entra answers AADSTS65001: no consent).
TEXT
}

if [ "${GRAPH_APP_ROLES_ASSIGNED:-true}" != "true" ]; then
  echo
  echo "ACTION NEEDED (an administrator): the admin grants were not made during deployment"
  echo "(ASSIGN_GRAPH_APP_ROLES=false)."
  admin_commands
elif [ "${MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED:-true}" != "true" ]; then
  echo
  echo "Granting the new managed identity its Microsoft Graph permissions (it may take Entra a few minutes to"
  echo "know it):"
  if ! command -v az >/dev/null 2>&1; then
    echo "ACTION NEEDED: az CLI is not installed, so the grants could not be made."
    admin_commands
  elif ! bash ./scripts/grant-graph-permissions.sh; then
    echo "ACTION NEEDED: the grants failed (above)."
    admin_commands
  fi
fi

cat <<TEXT

Next steps (infra/README.md explains each):
  1. Import the connector into Power Automate, in one command (Power Platform CLI: pac auth create once;
     paconn is the fallback):
         scripts/import-connector.sh            (Windows: scripts/import-connector.ps1)
     or in the portal: connector/ as a custom connector, identity provider "Azure Active Directory",
     client id ${CONNECTOR_CLIENT_APP_ID}, tenant ID ${AZURE_TENANT_ID:-<AZURE_TENANT_ID>} (not "common": the
     registrations are single-tenant), resource URL ${API_APP_ID_URI:-<API_APP_ID_URI>}, and a client secret
     from scripts/connector-secret.sh.
  2. After saving the connector, add the redirect URL it shows to the client app:
         scripts/connector-secret.sh --redirect-uri <redirect URL>
  3. Create a flow with "When an appointment is created" and book an appointment.
TEXT
