#!/usr/bin/env bash
# Imports the custom connector into Power Automate, or applies a changed connector/ definition to the
# connector imported before, with this deployment's values:
#
#   scripts/import-connector.sh [--env POWER_PLATFORM_ENVIRONMENT_ID] [--tool pac|paconn]
#   scripts/import-connector.sh --update [--connector-id ID] [--env ...] [--tool pac|paconn]
#
# It fills connector/ in (scripts/connector-files.sh: the Function App's host, the deployment's tenant, the
# connector client id and the API's scope from the azd environment) into .azure/<env>/connector/, then:
#
#   pac (the documented path; Power Platform CLI, https://learn.microsoft.com/power-platform/developer/cli/reference/connector,
#        signed in with `pac auth create`): `pac connector create` / `pac connector update --connector-id`. pac
#        takes no client secret, so the script then shows a new one (scripts/connector-secret.sh) to paste into
#        the connector's Security tab; the connector id is recorded (azd env POWER_PLATFORM_CONNECTOR_ID) for
#        --update.
#   paconn (the fallback, https://learn.microsoft.com/connectors/custom-connectors/paconn-cli; its sign-in uses
#        the older device-code flow some tenants refuse, PowerPlatformConnectors#4035): `paconn create` / `paconn
#        update --settings settings.json`, each with a new client secret handed over without printing it.
#
# Without --tool, pac when it is installed, else paconn. Without --env, the tool's own default (pac: the
# environment of the active auth profile; paconn asks). The connector is named by the definition's info.title
# (Power Platform allows 30 characters). The redirect URL exists once the connector does: the last step printed
# adds it. Runs on stock macOS bash 3.2; scripts/import-connector.ps1 is the same for Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/_azd_env.sh
require CONNECTOR_CLIENT_APP_ID

environment=""
tool=""
update=false
connector_id="${POWER_PLATFORM_CONNECTOR_ID:-}"
usage="usage: $0 [--update [--connector-id ID]] [--env POWER_PLATFORM_ENVIRONMENT_ID] [--tool pac|paconn]"
while [ $# -gt 0 ]; do
  case "$1" in
    --env|-e) environment="$2"; shift 2 ;;
    --tool) tool="$2"; shift 2 ;;
    --update) update=true; shift ;;
    --connector-id) connector_id="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [ -z "$tool" ]; then
  if command -v pac >/dev/null 2>&1; then tool=pac; elif command -v paconn >/dev/null 2>&1; then tool=paconn; fi
fi
case "$tool" in
  pac|paconn) ;;
  "") echo "error: neither pac nor paconn is installed. Install the Power Platform CLI (pac:" >&2
      echo "  https://learn.microsoft.com/power-platform/developer/cli/introduction), then pac auth create;" >&2
      echo "  or, as a fallback, pip install paconn, then paconn login." >&2
      exit 1 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
if ! command -v "$tool" >/dev/null 2>&1; then
  echo "error: ${tool} is not installed" >&2
  exit 1
fi

out=".azure/${AZURE_ENV_NAME:-default}/connector"
./scripts/connector-files.sh "$out" >/dev/null

if [ "$tool" = paconn ]; then
  if [ "$update" = true ] && [ ! -f "$out/settings.json" ]; then
    echo "error: ${out}/settings.json (written by the paconn import) is missing: paconn cannot tell which connector" >&2
    echo "  to update. Use --tool pac --connector-id <id>, or import again." >&2
    exit 1
  fi
  # OAuth connectors take their client secret with every create and update: a new one, never printed.
  secret=$(./scripts/connector-secret.sh --secret-only)
  if [ "$update" = true ]; then
    (cd "$out" && paconn update --settings settings.json --api-def apiDefinition.swagger.json \
      --api-prop apiProperties.json --secret "$secret")
  elif [ -n "$environment" ]; then
    # paconn writes settings.json (the new connector's id, for `paconn update`) into its working directory.
    (cd "$out" && paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json \
      --secret "$secret" --overwrite-settings --env "$environment")
  else
    (cd "$out" && paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json \
      --secret "$secret" --overwrite-settings)
  fi
  unset secret
  if [ "$update" = true ]; then
    echo "Updated, with a new client secret: remove the old one after the overlap (scripts/rotate-connector-secret.sh --remove-old)."
    exit 0
  fi
else
  if [ "$update" = true ]; then
    if [ -z "$connector_id" ]; then
      echo "error: which connector? Pass --connector-id (pac connector list shows it), or import with this script," >&2
      echo "  which records it (POWER_PLATFORM_CONNECTOR_ID)." >&2
      exit 1
    fi
    set -- --connector-id "$connector_id"
  else
    set --
  fi
  if [ -n "$environment" ]; then
    set -- "$@" --environment "$environment"
  fi
  verb=create
  if [ "$update" = true ]; then verb=update; fi
  answer=$(pac connector "$verb" --api-definition-file "$out/apiDefinition.swagger.json" \
    --api-properties-file "$out/apiProperties.json" "$@")
  printf '%s\n' "$answer"
  if [ "$update" = true ]; then
    echo "Updated connector ${connector_id}. Its client secret is unchanged; if sign-ins now fail with AADSTS7000215"
    echo "(invalid client secret), run scripts/rotate-connector-secret.sh."
    exit 0
  fi
  created=$(printf '%s\n' "$answer" | grep -Eo '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}' | tail -n 1 || true)
  if [ -n "$created" ] && command -v azd >/dev/null 2>&1; then
    azd env set POWER_PLATFORM_CONNECTOR_ID "$created"
    echo "recorded: POWER_PLATFORM_CONNECTOR_ID=${created} (for --update)"
  fi
  cat <<TEXT

pac imports the definition without a client secret. Open the connector in Power Automate (Custom connectors,
then Edit, Security tab), paste this new client secret into "Client secret" and select "Update connector":
TEXT
  ./scripts/connector-secret.sh | sed -n '2,3p'
fi

cat <<TEXT
Last step: copy the Redirect URL the connector's Security tab shows and add it to the connector client app:
    scripts/connector-secret.sh --redirect-uri <redirect URL>
TEXT
