# Sourced by the scripts here: makes the azd environment's outputs (infra/main.bicep) available as shell
# variables. azd hooks already have them in the environment; run by hand, they come from `azd env get-values`.
# None of them is a secret.
if [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  eval "$(azd env get-values)"
fi
require() {
  for name in "$@"; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
      echo "error: $name is not set. Run 'azd up' first (or 'azd env select <env>')." >&2
      exit 1
    fi
  done
}
