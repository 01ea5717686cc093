#!/usr/bin/env bash
# For an administrator (Privileged Role Administrator or Global Administrator), once per deployment made
# with ASSIGN_GRAPH_APP_ROLES=false: makes the grants infra/entra/graph.bicep would have made (infra/README.md,
# "Microsoft Graph permissions", says which call needs which and why).
#   - Microsoft Graph application permissions for the app's managed identity: Calendars.Read,
#     Bookings.Read.All, and when ENABLE_CANCEL_WITH_REASON=true Bookings.ReadWrite.All and
#     BookingsAppointment.ReadWrite.All (the cancel page and the other appointment pages disagree: both);
#   - tenant-wide consent to the connector client's sign-in scopes (openid offline_access User.Read);
#   - tenant-wide consent to the API registration's delegated Graph permissions (Bookings.Read.All User.Read),
#     which the app uses on behalf of the signed-in user.
# Idempotent: grants that exist are left alone. Needs az CLI signed in to the tenant (az login).
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require MANAGED_IDENTITY_PRINCIPAL_ID CONNECTOR_CLIENT_APP_ID API_APP_CLIENT_ID

graph_app_id=00000003-0000-0000-c000-000000000000
roles=(Calendars.Read Bookings.Read.All)
if [ "${ENABLE_CANCEL_WITH_REASON:-false}" = "true" ]; then
  roles+=(Bookings.ReadWrite.All BookingsAppointment.ReadWrite.All)
fi

graph_sp_id=$(az ad sp show --id "$graph_app_id" --query id -o tsv)
existing=$(az rest --method GET \
  --url "https://graph.microsoft.com/v1.0/servicePrincipals/${MANAGED_IDENTITY_PRINCIPAL_ID}/appRoleAssignments" \
  --query "value[?resourceId=='${graph_sp_id}'].appRoleId" -o tsv)

for role in "${roles[@]}"; do
  role_id=$(az ad sp show --id "$graph_app_id" --query "appRoles[?value=='${role}' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
  if [ -z "$role_id" ]; then
    echo "error: Microsoft Graph has no application permission ${role}" >&2
    exit 1
  fi
  if grep -qx "$role_id" <<<"$existing"; then
    echo "ok: ${role} already granted to the managed identity"
    continue
  fi
  az rest --method POST \
    --url "https://graph.microsoft.com/v1.0/servicePrincipals/${graph_sp_id}/appRoleAssignedTo" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"${MANAGED_IDENTITY_PRINCIPAL_ID}\", \"resourceId\": \"${graph_sp_id}\", \"appRoleId\": \"${role_id}\"}" \
    --output none
  echo "granted: ${role} to the managed identity"
done

# Consent for the declared delegated permissions (requiredResourceAccess), for all users: the connector's
# sign-in scopes, and the API's Graph permissions for its calls on behalf of the user.
az ad app permission admin-consent --id "$CONNECTOR_CLIENT_APP_ID"
echo "granted: admin consent for the connector client app ${CONNECTOR_CLIENT_APP_ID}"
az ad app permission admin-consent --id "$API_APP_CLIENT_ID"
echo "granted: admin consent for the API app ${API_APP_CLIENT_ID} (delegated Bookings.Read.All User.Read)"
echo "Graph caches permissions for a while: new grants can take some minutes to apply."
