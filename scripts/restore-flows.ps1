# The twin of scripts/restore-flows.sh for Windows (read its header): restore the flow registrations from the daily
# export through the app (POST /api/backups/flows/restore), page by page, with the Function App's master key.
#   ./scripts/restore-flows.ps1 -List | -DryRun [-Export flows-<time>.json] | [-Export flows-<time>.json]
param([switch]$List, [switch]$DryRun, [string]$Export = '', [string]$Url = $env:RESTORE_URL,
      [string]$Key = $env:RESTORE_KEY)
$ErrorActionPreference = 'Stop'
if ($Export -and $Export -notlike 'flows-*.json') {
    Write-Error 'error: -Export takes an export''s name, flows-<time>.json (see -List)'
    exit 2
}
if (-not $Url -or -not $Key) {
    . (Join-Path $PSScriptRoot '_azd_env.ps1')
    Require-AzdValue @('FUNCTION_URL', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME')
    if (-not $Url) { $Url = $env:FUNCTION_URL }
    if (-not $Key) {
        $Key = az functionapp keys list --resource-group $env:AZURE_RESOURCE_GROUP --name $env:AZURE_FUNCTION_APP_NAME `
            --query masterKey --output tsv
    }
}
$headers = @{ 'x-functions-key' = $Key }

function Invoke-App([string]$Method, [string]$Path, $Body) {
    $request = @{ Method = $Method; Uri = "$Url/api/$Path"; Headers = $headers; ContentType = 'application/json' }
    if ($null -ne $Body) { $request.Body = ($Body | ConvertTo-Json -Compress) }
    try { return Invoke-RestMethod @request }
    catch {
        Write-Host "error: $Method /api/$Path failed: $($_.ErrorDetails.Message)"
        exit 1
    }
}

if ($List) {
    Invoke-App 'GET' 'backups/flows' $null | ConvertTo-Json -Depth 5
    exit 0
}
$after = ''
$page = 1
do {
    $body = @{ dryRun = [bool]$DryRun; after = $after }
    if ($Export) { $body.export = $Export }
    $answer = Invoke-App 'POST' 'backups/flows/restore' $body
    Write-Host "page ${page}: $($answer | ConvertTo-Json -Compress -Depth 5)"
    $after = $answer.next
    $page++
} while ($after)
if ($DryRun) { Write-Host 'dry run: nothing was written. Run again without -DryRun to restore.' }
else { Write-Host 'restored. Check a flow: book a test appointment, or see docs/operations.md.' }
