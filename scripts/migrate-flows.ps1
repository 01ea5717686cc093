# The twin of scripts/migrate-flows.sh for Windows (read its header): move flows exported with Export → Package (.zip)
# from Microsoft's Bookings connector to this app's connector, and list the expressions to review (docs/migration.md).
#   ./scripts/migrate-flows.ps1 EXPORT.zip -ApiName shared_<name>-5f<id> [-Output OUT.zip] [-DisplayName NAME]
#                               [-Json] [-DryRun] [-Force]
param([Parameter(Mandatory = $true, Position = 0)][string]$Package, [Parameter(Mandatory = $true)][string]$ApiName,
      [string]$Output = '', [string]$DisplayName = '', [switch]$Json, [switch]$DryRun, [switch]$Force)
$ErrorActionPreference = 'Stop'
$root = Split-Path -Parent $PSScriptRoot
$python = Join-Path $root '.venv/Scripts/python.exe'
if (-not (Test-Path $python)) { $python = Join-Path $root '.venv/bin/python' }
if (-not (Test-Path $python)) { $python = if (Get-Command py -ErrorAction SilentlyContinue) { 'py' } else { 'python' } }
$arguments = @('-m', 'scripts.migrate_flow_package', $Package, '--api-name', $ApiName)
if ($Output) { $arguments += @('--output', $Output) }
if ($DisplayName) { $arguments += @('--display-name', $DisplayName) }
if ($Json) { $arguments += '--json' }
if ($DryRun) { $arguments += '--dry-run' }
if ($Force) { $arguments += '--force' }
$env:PYTHONPATH = if ($env:PYTHONPATH) { "$root$([IO.Path]::PathSeparator)$env:PYTHONPATH" } else { $root }
& $python @arguments
exit $LASTEXITCODE
