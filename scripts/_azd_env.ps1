# Dot-sourced by the PowerShell scripts here (the twins of the POSIX ones): makes the azd environment's outputs
# (infra/main.bicep) available as environment variables. azd hooks already have them; run by hand, they come
# from `azd env get-values`. None of them is a secret.
if (-not $env:AZURE_FUNCTION_APP_NAME -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    foreach ($line in (azd env get-values)) {
        if ($line -match '^([A-Za-z_][A-Za-z0-9_]*)="?(.*?)"?$') {
            [Environment]::SetEnvironmentVariable($Matches[1], $Matches[2])
        }
    }
}
function Require-AzdValue([string[]]$Names) {
    foreach ($name in $Names) {
        if (-not [Environment]::GetEnvironmentVariable($name)) {
            Write-Error "$name is not set. Run 'azd up' first (or 'azd env select <env>')."
            exit 1
        }
    }
}
