#!/bin/sh
# azd postprovision hook: says what Bicep could not do and what to do next. It changes nothing and never
# prints or stores a secret. The connector's client secret is made on demand by scripts/connector-secret.sh.
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

if [ "${GRAPH_APP_ROLES_ASSIGNED:-true}" != "true" ]; then
  cat <<TEXT

ACTION NEEDED (an administrator): the Graph application permissions, the connector's sign-in consent and
the consent to the API's delegated Graph permissions were not granted during deployment
(ASSIGN_GRAPH_APP_ROLES=false). A Privileged Role Administrator or Global Administrator runs, once:
    scripts/grant-graph-permissions.sh
Until then the app cannot read Bookings or subscribe to calendars (Graph answers 403), and the trigger's
business list fails (Entra answers AADSTS65001: no consent).
TEXT
fi

cat <<TEXT

Next steps (infra/README.md explains each):
  1. Import connector/ as a custom connector in Power Automate; on its Security tab use
     identity provider "Azure Active Directory", client id ${CONNECTOR_CLIENT_APP_ID},
     tenant ID ${AZURE_TENANT_ID:-<AZURE_TENANT_ID>} (not "common": the registrations are single-tenant),
     resource URL ${API_APP_ID_URI:-<API_APP_ID_URI>}, and a client secret from
         scripts/connector-secret.sh
     For the command-line import, scripts/connector-files.sh writes both files with these values filled in.
  2. After saving the connector, add the redirect URL it shows to the client app:
         scripts/connector-secret.sh --redirect-uri <redirect URL>
  3. Create a flow with "When an appointment is created" and book an appointment.
TEXT
