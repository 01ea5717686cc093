# The twin of scripts/connector-secret.sh for Windows (read its header): a new client secret for the connector
# client app, shown once and its expiry recorded (CONNECTOR_CREDENTIAL_EXPIRES_AT); or the connector's redirect URLs,
# recorded in the azd environment (CONNECTOR_REDIRECT_URIS) so that every provision keeps them.
#   scripts/connector-secret.ps1 [-Months N] [-SecretOnly]
#   scripts/connector-secret.ps1 -RedirectUri URL
#   scripts/connector-secret.ps1 -AdoptRedirectUris
param([int]$Months = 6, [string]$RedirectUri = '', [switch]$AdoptRedirectUris, [switch]$SecretOnly)
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('CONNECTOR_CLIENT_APP_ID')
$app = $env:CONNECTOR_CLIENT_APP_ID
# Power Automate and Power Apps redirect every connector's OAuth sign-in here; infra/entra/graph.bicep declares it.
$globalRedirect = 'https://global.consent.azure-apim.net/redirect'

function Set-RedirectUris([string]$New) {
    if (-not (Get-Command azd -ErrorAction SilentlyContinue)) {
        Write-Error 'azd is not installed: the redirect URLs must be recorded in the azd environment (CONNECTOR_REDIRECT_URIS), or the next azd provision removes them.'
        exit 1
    }
    $declared = azd env get-value CONNECTOR_REDIRECT_URIS 2>$null
    if ($LASTEXITCODE -ne 0) { $declared = '' }
    $current = @(az ad app show --id $app --query 'web.redirectUris[]' -o tsv)
    if ($LASTEXITCODE -ne 0) { exit 1 }
    $list = @()
    foreach ($uri in @(($declared -split ',') + $current + @($New))) {
        $uri = "$uri".Trim()
        if ($uri -like 'https://*' -and $uri -ne $globalRedirect -and $list -notcontains $uri) { $list += $uri }
    }
    azd env set CONNECTOR_REDIRECT_URIS ($list -join ',')
    if ($LASTEXITCODE -ne 0) { exit 1 }
    az ad app update --id $app --web-redirect-uris $globalRedirect @list
    if ($LASTEXITCODE -ne 0) { exit 1 }
    Write-Host 'redirect URLs of the connector client app (recorded in CONNECTOR_REDIRECT_URIS, kept by every provision):'
    foreach ($uri in @($globalRedirect) + $list) { Write-Host "    $uri" }
}

if ($RedirectUri) {
    if ($RedirectUri -notmatch '^https://[^\s,]+$') { Write-Error 'the redirect URL must be https, without spaces or commas'; exit 2 }
    Set-RedirectUris $RedirectUri
    exit 0
}
if ($AdoptRedirectUris) { Set-RedirectUris ''; exit 0 }

$end = (Get-Date).ToUniversalTime().AddMonths($Months).ToString('yyyy-MM-ddTHH:mm:ssZ')
$secret = az ad app credential reset --id $app --append --display-name power-automate-connector --end-date $end --query password -o tsv
if ($LASTEXITCODE -ne 0) { exit 1 }
# The expiry where the app's daily check reads it: the azd environment (Bicep's app setting) and the app now.
$recorded = $false
if (Get-Command azd -ErrorAction SilentlyContinue) { azd env set CONNECTOR_CREDENTIAL_EXPIRES_AT $end | Out-Null; $recorded = ($LASTEXITCODE -eq 0) }
if ($env:AZURE_FUNCTION_APP_NAME -and $env:AZURE_RESOURCE_GROUP) {
    az functionapp config appsettings set --name $env:AZURE_FUNCTION_APP_NAME --resource-group $env:AZURE_RESOURCE_GROUP --settings "CONNECTOR_CREDENTIAL_EXPIRES_AT=$end" --output none
    $recorded = $recorded -and ($LASTEXITCODE -eq 0)
} else { $recorded = $false }
if ($recorded) { [Console]::Error.WriteLine("recorded: the secret expires $end (CONNECTOR_CREDENTIAL_EXPIRES_AT; warned from 30 days before)") }
else { [Console]::Error.WriteLine("warning: could not record the expiry everywhere; run: azd env set CONNECTOR_CREDENTIAL_EXPIRES_AT $end, then azd provision") }
if ($SecretOnly) { Write-Output $secret; exit 0 }
Write-Host "Client id:     $app"
Write-Host "Client secret: $secret"
Write-Host "Expires:       $end"
Write-Host "Paste it into the custom connector's Security tab now; it is not shown again."
exit 0
