#!/usr/bin/env bash
# Restore the flow registrations from the daily export (infra/README.md, "Restoring the flows").
#
#   scripts/restore-flows.sh --list                 the exports, newest first, with their flow counts
#   scripts/restore-flows.sh --dry-run [--export N] what a restore would do (writes nothing)
#   scripts/restore-flows.sh [--export N]           re-create the flows and their Graph subscriptions
#
# The app does the work (POST /api/backups/flows/restore): only its managed identity may create the Graph
# subscriptions. This script calls it page by page with the Function App's master key (az functionapp keys list;
# Owner or Contributor on the app), passed to curl on stdin, never on a command line. Running it twice gives the
# same state: flows already there are left alone. --url and --key (or RESTORE_URL / RESTORE_KEY) point it
# elsewhere, e.g. the local host (http://127.0.0.1:7071, local-master-key). Runs on stock macOS bash 3.2.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

dry_run=false
list=false
export_name=""
url=${RESTORE_URL:-}
key=${RESTORE_KEY:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=true ;;
    --list) list=true ;;
    --export) export_name=${2:-}; shift ;;
    --url) url=${2:-}; shift ;;
    --key) key=${2:-}; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$export_name" in
  ""|flows-*.json) ;;
  *) echo "error: --export takes an export's name, flows-<time>.json (see --list)" >&2; exit 2 ;;
esac

if [ -z "$url" ] || [ -z "$key" ]; then
  . "$here/_azd_env.sh"
  require FUNCTION_URL AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME
  [ -n "$url" ] || url=$FUNCTION_URL
  if [ -z "$key" ]; then
    key=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
      --query masterKey --output tsv)
  fi
fi

answer=$(mktemp)
trap 'rm -f "$answer"' EXIT

# call METHOD PATH [BODY]: the answer's body in $answer; stops on anything but 200.
call() {
  set -- "$1" "$2" "${3:-}"
  if [ -n "$3" ]; then set -- "$1" "$2" --data "$3"; else set -- "$1" "$2" --get; fi
  status=$(printf 'header = "x-functions-key: %s"\n' "$key" | curl --silent --show-error --config - \
    --request "$1" --header 'Content-Type: application/json' "$3" ${4:+"$4"} \
    --output "$answer" --write-out '%{http_code}' "$url/api/$2")
  if [ "$status" != "200" ]; then
    echo "error: $1 /api/$2 answered $status:" >&2
    cat "$answer" >&2
    echo >&2
    exit 1
  fi
}

if [ "$list" = true ]; then
  call GET backups/flows
  cat "$answer"
  echo
  exit 0
fi

after=""
page=1
while :; do
  body="{\"dryRun\": $dry_run, \"after\": \"$after\""
  [ -z "$export_name" ] || body="$body, \"export\": \"$export_name\""
  call POST backups/flows/restore "$body}"
  echo "page $page: $(cat "$answer")"
  after=$(sed -n 's/.*"next": *"\([^"]*\)".*/\1/p' "$answer")
  [ -n "$after" ] || break
  page=$((page + 1))
done
if [ "$dry_run" = true ]; then
  echo "dry run: nothing was written. Run again without --dry-run to restore."
else
  echo "restored. Check a flow: book a test appointment, or see docs/operations.md."
fi
