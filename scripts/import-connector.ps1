# The twin of scripts/import-connector.sh for Windows (read its header): fills connector/ in with this
# deployment's values, then imports it with pac (Power Platform CLI, the documented path) or paconn (the
# fallback), or with -Update applies a changed definition to the connector imported before.
#   scripts/import-connector.ps1 [-Environment ENV_ID] [-Tool pac|paconn]
#   scripts/import-connector.ps1 -Update [-ConnectorId ID] [-Environment ENV_ID] [-Tool pac|paconn]
param([string]$Environment = '', [string]$Tool = '', [switch]$Update, [string]$ConnectorId = $env:POWER_PLATFORM_CONNECTOR_ID)
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')
. ./scripts/_azd_env.ps1
Require-AzdValue @('FUNCTION_URL', 'AZURE_TENANT_ID', 'CONNECTOR_CLIENT_APP_ID', 'API_APP_ID_URI', 'API_SCOPE')
if (-not $Tool) {
    if (Get-Command pac -ErrorAction SilentlyContinue) { $Tool = 'pac' }
    elseif (Get-Command paconn -ErrorAction SilentlyContinue) { $Tool = 'paconn' }
    else {
        Write-Error 'neither pac nor paconn is installed. Install the Power Platform CLI (https://learn.microsoft.com/power-platform/developer/cli/introduction), then pac auth create; or, as a fallback, pip install paconn, then paconn login.'
        exit 1
    }
}
if ($Tool -notin @('pac', 'paconn')) { Write-Error 'usage: -Tool pac|paconn'; exit 2 }

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

if ($Tool -eq 'paconn') {
    if ($Update -and -not (Test-Path "$out/settings.json")) {
        Write-Error "$out/settings.json (written by the paconn import) is missing: use -Tool pac -ConnectorId <id>, or import again."
        exit 1
    }
    # OAuth connectors take their client secret with every create and update: a new one, never printed.
    $secret = & ./scripts/connector-secret.ps1 -SecretOnly
    if ($LASTEXITCODE -ne 0) { exit 1 }
    $envArgs = if ($Environment) { @('--env', $Environment) } else { @() }
    Push-Location $out
    try {
        if ($Update) { paconn update --settings settings.json --api-def apiDefinition.swagger.json --api-prop apiProperties.json --secret $secret }
        else { paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json --secret $secret --overwrite-settings @envArgs }
    }
    finally { Pop-Location; Remove-Variable secret }
    if ($LASTEXITCODE -ne 0) { exit 1 }
    if ($Update) { Write-Host 'Updated, with a new client secret: remove the old one after the overlap (scripts/rotate-connector-secret.ps1 -RemoveOld).'; exit 0 }
} else {
    $pacArgs = @('--api-definition-file', "$out/apiDefinition.swagger.json", '--api-properties-file', "$out/apiProperties.json")
    if ($Update) {
        if (-not $ConnectorId) { Write-Error 'which connector? Pass -ConnectorId (pac connector list shows it), or import with this script, which records it (POWER_PLATFORM_CONNECTOR_ID).'; exit 1 }
        $pacArgs += @('--connector-id', $ConnectorId)
    }
    if ($Environment) { $pacArgs += @('--environment', $Environment) }
    $verb = if ($Update) { 'update' } else { 'create' }
    $answer = pac connector $verb @pacArgs
    if ($LASTEXITCODE -ne 0) { exit 1 }
    $answer | Write-Host
    if ($Update) {
        Write-Host "Updated connector $ConnectorId. Its client secret is unchanged; if sign-ins now fail with AADSTS7000215 (invalid client secret), run scripts/rotate-connector-secret.ps1."
        exit 0
    }
    $ids = [regex]::Matches(($answer -join "`n"), '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}')
    if ($ids.Count -gt 0 -and (Get-Command azd -ErrorAction SilentlyContinue)) {
        $created = $ids[$ids.Count - 1].Value
        azd env set POWER_PLATFORM_CONNECTOR_ID $created
        Write-Host "recorded: POWER_PLATFORM_CONNECTOR_ID=$created (for -Update)"
    }
    Write-Host ''
    Write-Host 'pac imports the definition without a client secret. Open the connector in Power Automate (Custom connectors,'
    Write-Host 'then Edit, Security tab), paste this new client secret into "Client secret" and select "Update connector":'
    & ./scripts/connector-secret.ps1
}

Write-Host "Last step: copy the Redirect URL the connector's Security tab shows and add it to the connector client app:"
Write-Host '    scripts/connector-secret.ps1 -RedirectUri <redirect URL>'
exit 0
