# The twin of scripts/rotate-connector-secret.sh for Windows (read its header): 1. a new client secret (expiry
# recorded), the connector updated (paconn) or the secret shown once for its Security tab; 2. with -RemoveOld,
# after the overlap, every older connector secret removed.
#   scripts/rotate-connector-secret.ps1 [-Months N]
#   scripts/rotate-connector-secret.ps1 -RemoveOld [-OverlapHours H]
param([int]$Months = 6, [switch]$RemoveOld, [int]$OverlapHours = $(if ($env:ROTATION_OVERLAP_HOURS) { [int]$env:ROTATION_OVERLAP_HOURS } else { 24 }))
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('CONNECTOR_CLIENT_APP_ID')
$app = $env:CONNECTOR_CLIENT_APP_ID
$name = 'power-automate-connector'

if ($RemoveOld) {
    $rows = @(az ad app credential list --id $app --query "[?displayName=='$name'].[startDateTime, keyId]" -o tsv | Sort-Object -Descending)
    if ($LASTEXITCODE -ne 0) { exit 1 }
    if ($rows.Count -eq 0) { Write-Error "the connector client app has no $name secret"; exit 1 }
    $newestStart = ($rows[0] -split "`t")[0]
    $cutoff = (Get-Date).ToUniversalTime().AddHours(-$OverlapHours).ToString('yyyy-MM-ddTHH:mm:ssZ')
    if (($newestStart -replace '\..*$', '') -gt $cutoff) {
        [Console]::Error.WriteLine("not yet: the newest secret was made at $newestStart, less than $OverlapHours hours ago. Check that flows still sign in, then run this again after the overlap.")
        exit 1
    }
    $removed = 0
    foreach ($row in ($rows | Select-Object -Skip 1)) {
        az ad app credential delete --id $app --key-id ($row -split "`t")[1]
        if ($LASTEXITCODE -ne 0) { exit 1 }
        $removed++
    }
    Write-Host "removed $removed older connector secret(s); the one made at $newestStart stays."
    exit 0
}

$envName = if ($env:AZURE_ENV_NAME) { $env:AZURE_ENV_NAME } else { 'default' }
if ((Test-Path ".azure/$envName/connector/settings.json") -and (Get-Command paconn -ErrorAction SilentlyContinue)) {
    Write-Host '1. A new secret, handed to paconn update:'
    & ./scripts/import-connector.ps1 -Update -Tool paconn
    if ($LASTEXITCODE -ne 0) { exit 1 }
} else {
    Write-Host "1. A new secret. Paste it into the connector's Security tab (Power Automate, Custom connectors, Edit),"
    Write-Host '   then select Update connector:'
    & ./scripts/connector-secret.ps1 -Months $Months
}
Write-Host "2. Both secrets are valid now. After $OverlapHours hours, once flows have signed in with the new one, remove the old:"
Write-Host '       scripts/rotate-connector-secret.ps1 -RemoveOld'
exit 0
