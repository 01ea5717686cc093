#!/bin/sh
# azd preprovision hook: makes sure alerts reach a person, and catches, before anything is deployed, the two
# traps that would otherwise fail the deployment half-way with an Entra error (infra/README.md, "Deployment traps"):
#
#   0. ALERT_EMAIL unset: the alerts' action group would have nobody to notify. Asked for when azd runs the
#      hook at a terminal (azure.yaml `interactive: true` binds it to the console's stdin,
#      learn.microsoft.com/azure/developer/azure-developer-cli/azd-extensibility) and saved with `azd env set`;
#      otherwise (CI, no terminal) it stops with that command. infra/main.bicep refuses an empty value too.
#   1. App registrations of this environment deleted within the last 30 days (`az ad app delete` after
#      `azd down --purge`): Entra keeps them soft-deleted with their uniqueName, and creating them again
#      fails ("Another object with the same value for property uniqueName already exists",
#      github.com/microsoftgraph/msgraph-bicep-types/issues/137). This stops with the commands that
#      restore or purge them.
#   2. ASSIGN_GRAPH_APP_ROLES left true by a deployer who is neither Privileged Role Administrator nor
#      Global Administrator: the admin grants would fail, and with them the whole deployment. This sets
#      it to false (azd reloads the environment after a hook, github.com/Azure/azure-dev/issues/1714), so
#      the app deploys and the post-provision step prints the grant command for an administrator.
#   3. NETWORK_ISOLATION=true in a subscription where the Microsoft.App resource provider is not registered:
#      Flex Consumption's virtual network integration delegates the subnet to Microsoft.App/environments and
#      needs it ("Ensure that the Microsoft.App Azure resource provider is enabled for your subscription",
#      learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations and
#      functions-networking-options#regional-virtual-network-integration). Registering it is what the portal and
#      `az functionapp create` do by themselves; here it is asked at a terminal (then
#      `az provider register --namespace Microsoft.App --wait`), and otherwise it stops with that command.
#   4. An upgrade from a version whose scripts added the connector's redirect URL to its app registration only
#      (infra/README.md, "Upgrading from a version that added the redirect URL out of band"): the provision
#      declares the list, so it would remove that URL and new connections would fail with AADSTS50011. While
#      CONNECTOR_REDIRECT_URIS was never set, the URLs the registration has now are recorded there first (in the
#      azd environment only), as scripts/connector-secret.sh --adopt-redirect-uris does.
#
# The checks read Entra and the subscription with az CLI; without it (or signed out) they are skipped with a
# warning. It never changes anything in Entra. scripts/preprovision.ps1 is the same for Windows.
set -eu
cd "$(dirname "$0")/.."

graph="https://graph.microsoft.com/v1.0"
env_name="${AZURE_ENV_NAME:-}"
subscription="${AZURE_SUBSCRIPTION_ID:-}"
case "${NETWORK_ISOLATION:-false}" in
  [Tt][Rr][Uu][Ee]) isolation=true ;;
  *) isolation=false ;;
esac
# Directory role template ids (the same in every tenant).
privileged_role_admin="e8611ab8-c189-46e8-94e1-60213ab1f814"
global_admin="62e90394-69f5-4237-9190-012177145e10"

# 0. Who receives the alerts: one or more addresses, comma-separated; never nobody.
valid_addresses() {
  case "$1" in
    "" | ,* | *, | *,,*) return 1 ;;
  esac
  old_ifs=$IFS
  IFS=,
  for address in $1; do
    case "$address" in
      *[[:space:]]* | *@*@* | @* | *@ | *@.* | *.) IFS=$old_ifs; return 1 ;;
      ?*@?*.?*) ;;
      *) IFS=$old_ifs; return 1 ;;
    esac
  done
  IFS=$old_ifs
}
alert_email="${ALERT_EMAIL:-}"
if [ -z "$alert_email" ] && [ -t 0 ]; then
  echo "Alerts (the app stopped, deliveries failing, a Graph subscription about to expire, ...) are e-mailed."
  printf "E-mail address(es) that receive them, comma-separated: "
  read -r alert_email || alert_email=""
fi
if ! valid_addresses "$alert_email"; then
  if [ -z "$alert_email" ]; then
    echo "STOP: ALERT_EMAIL is not set, so no alert would reach anybody. Set who receives them, then azd up again:"
  else
    echo "STOP: '${alert_email}' is not a comma-separated list of e-mail addresses. Set who receives the alerts:"
  fi
  echo "    azd env set ALERT_EMAIL ops@contoso.com            (several: a@contoso.com,b@contoso.com)"
  exit 1
fi
if [ "$alert_email" != "${ALERT_EMAIL:-}" ]; then
  azd env set ALERT_EMAIL "$alert_email"
  echo "ok: alerts go to ${alert_email} (ALERT_EMAIL)"
fi

if ! command -v az >/dev/null 2>&1 || ! az account show --output none >/dev/null 2>&1; then
  echo "warning: az CLI is missing or not signed in (az login): skipped the checks for soft-deleted app"
  echo "  registrations and for the rights the admin grants need. If provisioning then fails on"
  echo "  'appRoleAssignedTo' or 'oauth2PermissionGrants' (Authorization_RequestDenied), run"
  echo "      azd env set ASSIGN_GRAPH_APP_ROLES false"
  echo "  and azd up again; an administrator makes the grants afterwards (scripts/grant-graph-permissions.sh)."
  echo "  Upgrading from a version that added the connector's redirect URL by hand? First run"
  echo "      scripts/connector-secret.sh --adopt-redirect-uris"
  if [ "$isolation" = "true" ]; then
    echo "  NETWORK_ISOLATION is on: also check that the Microsoft.App resource provider is registered"
    echo "      az provider show --namespace Microsoft.App --query registrationState --output tsv"
  fi
  exit 0
fi

# 3. Flex Consumption's virtual network integration needs the Microsoft.App resource provider.
if [ "$isolation" = "true" ]; then
  state=$(az provider show --namespace Microsoft.App ${subscription:+--subscription "$subscription"} \
    --query registrationState --output tsv 2>/dev/null || echo "unknown")
  if [ "$state" = "Registered" ]; then
    echo "ok: the Microsoft.App resource provider is registered (NETWORK_ISOLATION needs it)"
  else
    register="az provider register --namespace Microsoft.App${subscription:+ --subscription $subscription} --wait"
    answer=""
    if [ -t 0 ]; then
      echo "NETWORK_ISOLATION integrates the app with a virtual network, which needs the Microsoft.App resource"
      echo "provider in this subscription; it is ${state}. Registering it changes nothing else and costs nothing."
      printf "Register it now (%s)? [y/N] " "$register"
      read -r answer || answer=""
    fi
    case "$answer" in
      y | Y | yes | YES | Yes)
        if ! az provider register --namespace Microsoft.App ${subscription:+--subscription "$subscription"} --wait; then
          echo "STOP: registering Microsoft.App failed (it needs the right to register providers on the subscription,"
          echo "e.g. Contributor). Ask someone who has it to run: ${register}"
          exit 1
        fi
        echo "ok: registered the Microsoft.App resource provider"
        ;;
      *)
        echo "STOP: NETWORK_ISOLATION is on, and the Microsoft.App resource provider is not registered in this"
        echo "subscription (${state}): the app's virtual network integration would fail. Register it, then azd up again:"
        echo "    ${register}"
        echo "or turn isolation off: azd env set NETWORK_ISOLATION false"
        exit 1
        ;;
    esac
  fi
fi

# 1. Soft-deleted registrations of this environment (display names as infra/entra/graph.bicep sets them).
if [ -n "$env_name" ]; then
  deleted=$(az rest --method GET \
    --url "${graph}/directory/deletedItems/microsoft.graph.application?\$select=id,displayName,deletedDateTime&\$top=999" \
    --query "value[?displayName=='Bookings triggers API (${env_name})' || displayName=='Bookings triggers connector (${env_name})'].[id, displayName, deletedDateTime]" \
    --output tsv 2>/dev/null || true)
  if [ -n "$deleted" ]; then
    echo "STOP: app registrations of the environment '${env_name}' were deleted less than 30 days ago. Entra keeps"
    echo "them soft-deleted with their unique names, so deploying would fail creating them again."
    echo "$deleted" | while IFS="$(printf '\t')" read -r id name when; do
      echo "  ${name} (object id ${id}, deleted ${when})"
    done
    echo "Either restore them (keeps their client ids, so an imported connector and its flows keep working):"
    echo "$deleted" | while IFS="$(printf '\t')" read -r id name when; do
      echo "    az rest --method POST --url ${graph}/directory/deletedItems/${id}/restore"
    done
    echo "or delete them for good (new client ids; re-import the connector):"
    echo "$deleted" | while IFS="$(printf '\t')" read -r id name when; do
      echo "    az rest --method DELETE --url ${graph}/directory/deletedItems/${id}"
    done
    echo "or deploy as another environment: azd env new <name>. Then run azd up again."
    exit 1
  fi
fi

# 2. The admin grants need Privileged Role Administrator or Global Administrator (an active assignment:
# an eligible PIM role that is not activated does not count, and the grants would fail).
if [ "${ASSIGN_GRAPH_APP_ROLES:-true}" != "false" ]; then
  if ! roles=$(az rest --method GET \
      --url "${graph}/me/transitiveMemberOf/microsoft.graph.directoryRole?\$select=roleTemplateId" \
      --query "value[].roleTemplateId" --output tsv 2>/dev/null); then
    echo "warning: could not read your directory roles; the admin grants are attempted (ASSIGN_GRAPH_APP_ROLES=true)."
    echo "  If provisioning fails on them, run: azd env set ASSIGN_GRAPH_APP_ROLES false, then azd up again."
  elif printf '%s\n' "$roles" | grep -qx -e "$privileged_role_admin" -e "$global_admin"; then
    echo "ok: you may make the admin grants (Privileged Role Administrator or Global Administrator)"
  else
    azd env set ASSIGN_GRAPH_APP_ROLES false
    echo "note: you are neither Privileged Role Administrator nor Global Administrator, so the Microsoft Graph"
    echo "  permissions and the tenant-wide consents cannot be granted during this deployment:"
    echo "  ASSIGN_GRAPH_APP_ROLES is now false. The app deploys; the post-provision step prints what an"
    echo "  administrator runs afterwards."
  fi
fi

# 4. Redirect URLs an earlier version added out of band: recorded before the provision declares the list.
global_redirect="https://global.consent.azure-apim.net/redirect"
if [ -n "${CONNECTOR_CLIENT_APP_ID:-}" ] && [ -z "${CONNECTOR_REDIRECT_URIS+set}" ]; then
  current=$(az ad app show --id "$CONNECTOR_CLIENT_APP_ID" --query "web.redirectUris[]" -o tsv 2>/dev/null || true)
  adopted=""
  set -f  # URLs may hold ? and *: never globbed
  for uri in $current; do
    case "$uri" in
      https://*) ;;
      *) continue ;;
    esac
    case ",${adopted}," in
      *",${uri},"*) continue ;;
    esac
    if [ "$uri" != "$global_redirect" ]; then
      adopted="${adopted}${adopted:+,}${uri}"
    fi
  done
  set +f
  if [ -n "$adopted" ]; then
    azd env set CONNECTOR_REDIRECT_URIS "$adopted"
    echo "ok: kept the connector client's redirect URLs an earlier version added (now in CONNECTOR_REDIRECT_URIS):"
    echo "    ${adopted}"
  fi
fi
