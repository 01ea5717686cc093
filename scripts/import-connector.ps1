# The twin of scripts/import-connector.sh for Windows (read its header): fills connector/ in with this
# deployment's values, makes a client secret for the connector client app (handed to paconn, never printed or
# stored) and runs `paconn create`.
#   scripts/import-connector.ps1 [-Environment POWER_PLATFORM_ENVIRONMENT_ID]
param([string]$Environment = '')
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('FUNCTION_URL', 'AZURE_TENANT_ID', 'CONNECTOR_CLIENT_APP_ID', 'API_APP_ID_URI', 'API_SCOPE')
if (-not (Get-Command paconn -ErrorAction SilentlyContinue)) {
    Write-Error 'paconn is not installed: pip install paconn, then paconn login'
    exit 1
}

$envName = if ($env:AZURE_ENV_NAME) { $env:AZURE_ENV_NAME } else { 'default' }
$out = ".azure/$envName/connector"
New-Item -ItemType Directory -Force -Path $out | Out-Null
$tenant = $env:AZURE_TENANT_ID
$hostName = ($env:FUNCTION_URL -replace '^https://', '') -replace '/.*$', ''

# The same substitutions as scripts/connector-files.sh.
$properties = (Get-Content connector/apiProperties.json -Raw).
    Replace('<AZURE_TENANT_ID>', $tenant).
    Replace('<CONNECTOR_CLIENT_APP_ID>', $env:CONNECTOR_CLIENT_APP_ID).
    Replace('<API_APP_ID_URI>', $env:API_APP_ID_URI).
    Replace('<API_SCOPE>', $env:API_SCOPE)
$definition = Get-Content connector/apiDefinition.swagger.json -Raw
$definition = $definition -replace '(?m)^  "host": "[^"]*"', "  `"host`": `"$hostName`""
$definition = $definition -replace '(https://login\.[a-z.]*/)common/', "`${1}$tenant/"
if ("$properties$definition" -match '<[A-Z_]+>') { Write-Error "placeholder left unfilled: $($Matches[0])"; exit 1 }
Set-Content -Path "$out/apiProperties.json" -Value $properties -NoNewline
Set-Content -Path "$out/apiDefinition.swagger.json" -Value $definition -NoNewline

$end = (Get-Date).ToUniversalTime().AddMonths(6).ToString('yyyy-MM-ddTHH:mm:ssZ')
$secret = az ad app credential reset --id $env:CONNECTOR_CLIENT_APP_ID --append --display-name power-automate-connector --end-date $end --query password -o tsv
if ($LASTEXITCODE -ne 0) { exit 1 }
$envArgs = if ($Environment) { @('--env', $Environment) } else { @() }
Push-Location $out
try { paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json --secret $secret --overwrite-settings @envArgs }
finally { Pop-Location; Remove-Variable secret }
if ($LASTEXITCODE -ne 0) { exit 1 }

Write-Host "Imported. Last step: open the connector in Power Automate (Custom connectors, then its Security tab), copy"
Write-Host "the Redirect URL shown there and add it to the connector client app (Entra ID, App registrations,"
Write-Host "Authentication, Web redirect URIs)."
exit 0
