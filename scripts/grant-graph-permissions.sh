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
#
# scripts/postprovision.sh runs it on the first provision of an environment, whose managed identity is new:
# Entra may not have replicated it yet, and Graph then answers "does not exist or one of its queried
# reference-property objects are not present" (github.com/microsoftgraph/msgraph-bicep-types/issues/193).
# Such answers are retried, every GRANT_RETRY_SECONDS (30) up to GRANT_RETRY_ATTEMPTS (10) times; any other
# error (403: the signed-in user may not grant) stops at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require MANAGED_IDENTITY_PRINCIPAL_ID CONNECTOR_CLIENT_APP_ID API_APP_CLIENT_ID

graph_app_id=00000003-0000-0000-c000-000000000000
roles=(Calendars.Read Bookings.Read.All)
if [ "${ENABLE_CANCEL_WITH_REASON:-false}" = "true" ]; then
  roles+=(Bookings.ReadWrite.All BookingsAppointment.ReadWrite.All)
fi

attempts="${GRANT_RETRY_ATTEMPTS:-10}"
pause="${GRANT_RETRY_SECONDS:-30}"
# Runs "$@" (an az command); while it fails because Entra does not know the identity yet, waits and retries.
replicated() {
  local try=1 out
  while true; do
    if out=$("$@" 2>&1); then
      printf '%s' "$out"
      return 0
    fi
    if [ "$try" -ge "$attempts" ] || ! grep -qiE "does not exist|Request_ResourceNotFound|not a valid reference" <<<"$out"; then
      printf '%s\n' "$out" >&2
      return 1
    fi
    echo "waiting for Entra to replicate the managed identity (attempt ${try} of ${attempts}, ${pause} s)" >&2
    try=$((try + 1))
    sleep "$pause"
  done
}

graph_sp_id=$(az ad sp show --id "$graph_app_id" --query id -o tsv)
existing=$(replicated az rest --method GET \
  --url "https://graph.microsoft.com/v1.0/servicePrincipals/${MANAGED_IDENTITY_PRINCIPAL_ID}/appRoleAssignments" \
  --query "value[?resourceId=='${graph_sp_id}'].appRoleId" -o tsv)

for role in ${roles[@]+"${roles[@]}"}; do
  role_id=$(az ad sp show --id "$graph_app_id" --query "appRoles[?value=='${role}' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
  if [ -z "$role_id" ]; then
    echo "error: Microsoft Graph has no application permission ${role}" >&2
    exit 1
  fi
  if grep -qx "$role_id" <<<"$existing"; then
    echo "ok: ${role} already granted to the managed identity"
    continue
  fi
  replicated az rest --method POST \
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
