# azd postprovision hook on Windows: the twin of scripts/postprovision.sh (read its header for why). Prints the
# URLs and next steps, grants a new managed identity its Graph permissions when the deployer may (waiting for
# Entra to replicate it), and otherwise prints the exact commands for an administrator. Never prints a secret.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('FUNCTION_URL', 'NOTIFICATION_URL', 'API_APP_CLIENT_ID', 'API_SCOPE', 'CONNECTOR_CLIENT_APP_ID')

$health = if ($env:HEALTH_URL) { $env:HEALTH_URL } else { "$($env:FUNCTION_URL)/api/health" }
Write-Host ""
Write-Host "Bookings appointment triggers: provisioned."
Write-Host "  Function App           $($env:AZURE_FUNCTION_APP_NAME)  ($($env:FUNCTION_URL))"
Write-Host "  Health                 $health"
Write-Host "  Graph notifications    $($env:NOTIFICATION_URL)"
Write-Host "  Graph lifecycle        $($env:LIFECYCLE_URL)"
Write-Host "  API (token audience)   $($env:API_APP_CLIENT_ID)   scope $($env:API_SCOPE)"
Write-Host "  Connector client app   $($env:CONNECTOR_CLIENT_APP_ID)"

function Write-AdminCommands {
    Write-Host "A Privileged Role Administrator or Global Administrator runs, once, in a clone of this repository with the"
    Write-Host "same azd environment (azd env select $($env:AZURE_ENV_NAME)) and signed in with az login:"
    Write-Host "    scripts/grant-graph-permissions.ps1          (macOS, Linux: scripts/grant-graph-permissions.sh)"
    Write-Host "It grants the managed identity $($env:MANAGED_IDENTITY_PRINCIPAL_ID) its Microsoft Graph"
    Write-Host "application permissions and gives the tenant-wide consents, the same as:"
    Write-Host "    az ad app permission admin-consent --id $($env:CONNECTOR_CLIENT_APP_ID)"
    Write-Host "    az ad app permission admin-consent --id $($env:API_APP_CLIENT_ID)"
    Write-Host "Until then the app cannot read Bookings or subscribe to calendars (Graph answers 403), and the trigger's"
    Write-Host "business list fails (Entra answers AADSTS65001: no consent)."
}

if ($env:GRAPH_APP_ROLES_ASSIGNED -eq 'false') {
    Write-Host ""
    Write-Host "ACTION NEEDED (an administrator): the admin grants were not made during deployment"
    Write-Host "(ASSIGN_GRAPH_APP_ROLES=false)."
    Write-AdminCommands
} elseif ($env:MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED -eq 'false') {
    Write-Host ""
    Write-Host "Granting the new managed identity its Microsoft Graph permissions (it may take Entra a few minutes to"
    Write-Host "know it):"
    if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
        Write-Host "ACTION NEEDED: az CLI is not installed, so the grants could not be made."
        Write-AdminCommands
    } else {
        $granted = $true
        try { & ./scripts/grant-graph-permissions.ps1; $granted = ($LASTEXITCODE -eq 0) }
        catch { Write-Host $_; $granted = $false }
        if (-not $granted) {
            Write-Host "ACTION NEEDED: the grants failed (above)."
            Write-AdminCommands
        }
    }
}

Write-Host ""
Write-Host "Next steps (infra/README.md explains each):"
Write-Host "  1. Import the connector into Power Automate, in one command (Power Platform CLI: pac auth create once;"
Write-Host "     paconn is the fallback):"
Write-Host "         scripts/import-connector.ps1"
Write-Host "     or in the portal: connector/ as a custom connector, identity provider 'Azure Active Directory',"
Write-Host "     client id $($env:CONNECTOR_CLIENT_APP_ID), tenant ID $($env:AZURE_TENANT_ID) (not 'common'), resource URL"
Write-Host "     $($env:API_APP_ID_URI), and a client secret from scripts/connector-secret.ps1 (its expiry recorded)."
Write-Host "  2. After saving the connector, add the redirect URL it shows to the client app (recorded, so every provision"
Write-Host "     keeps it; one added in the portal is removed by the next): scripts/connector-secret.ps1 -RedirectUri <URL>"
Write-Host "  3. Create a flow with 'When an appointment is created' and book an appointment."
exit 0
