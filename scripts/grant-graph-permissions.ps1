# The twin of scripts/grant-graph-permissions.sh for Windows (read its header: which grants, and why). For an
# administrator (Privileged Role Administrator or Global Administrator); idempotent; waits, like the POSIX
# script, for Entra to replicate a new managed identity (GRANT_RETRY_ATTEMPTS, GRANT_RETRY_SECONDS).
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('MANAGED_IDENTITY_PRINCIPAL_ID', 'CONNECTOR_CLIENT_APP_ID', 'API_APP_CLIENT_ID')

$graphAppId = '00000003-0000-0000-c000-000000000000'
$roles = @('Calendars.Read', 'Bookings.Read.All')
if ($env:ENABLE_CANCEL_WITH_REASON -eq 'true') { $roles += @('Bookings.ReadWrite.All', 'BookingsAppointment.ReadWrite.All') }
$attempts = if ($env:GRANT_RETRY_ATTEMPTS) { [int]$env:GRANT_RETRY_ATTEMPTS } else { 10 }
$pause = if ($env:GRANT_RETRY_SECONDS) { [int]$env:GRANT_RETRY_SECONDS } else { 30 }

# Runs an az command; while it fails because Entra does not know the identity yet, waits and retries.
function Invoke-Replicated([scriptblock]$Command) {
    for ($try = 1; ; $try++) {
        $out = & $Command 2>&1
        if ($LASTEXITCODE -eq 0) { return $out }
        $text = $out | Out-String
        if ($try -ge $attempts -or $text -notmatch 'does not exist|Request_ResourceNotFound|not a valid reference') {
            Write-Host $text
            exit 1
        }
        Write-Host "waiting for Entra to replicate the managed identity (attempt $try of $attempts, $pause s)"
        Start-Sleep -Seconds $pause
    }
}

$mi = $env:MANAGED_IDENTITY_PRINCIPAL_ID
$graphSpId = az ad sp show --id $graphAppId --query id -o tsv
$existing = @(Invoke-Replicated { az rest --method GET --url "https://graph.microsoft.com/v1.0/servicePrincipals/$mi/appRoleAssignments" --query "value[?resourceId=='$graphSpId'].appRoleId" -o tsv })
foreach ($role in $roles) {
    $roleId = az ad sp show --id $graphAppId --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv
    if (-not $roleId) { Write-Host "error: Microsoft Graph has no application permission $role"; exit 1 }
    if ($existing -contains $roleId) { Write-Host "ok: $role already granted to the managed identity"; continue }
    $body = @{ principalId = $mi; resourceId = $graphSpId; appRoleId = $roleId } | ConvertTo-Json -Compress
    $bodyFile = New-TemporaryFile
    Set-Content -Path $bodyFile -Value $body
    Invoke-Replicated { az rest --method POST --url "https://graph.microsoft.com/v1.0/servicePrincipals/$graphSpId/appRoleAssignedTo" --headers 'Content-Type=application/json' --body "@$bodyFile" --output none } | Out-Null
    Remove-Item $bodyFile
    Write-Host "granted: $role to the managed identity"
}

az ad app permission admin-consent --id $env:CONNECTOR_CLIENT_APP_ID
if ($LASTEXITCODE -ne 0) { exit 1 }
Write-Host "granted: admin consent for the connector client app $($env:CONNECTOR_CLIENT_APP_ID)"
az ad app permission admin-consent --id $env:API_APP_CLIENT_ID
if ($LASTEXITCODE -ne 0) { exit 1 }
Write-Host "granted: admin consent for the API app $($env:API_APP_CLIENT_ID) (delegated Bookings.Read.All User.Read)"
Write-Host "Graph caches permissions for a while: new grants can take some minutes to apply."
exit 0
