# azd preprovision hook on Windows: the twin of scripts/preprovision.sh (read its header for why). Asks for
# ALERT_EMAIL when it is unset (or stops with the command that sets it), stops when app registrations of this
# environment are soft-deleted (restore or purge them first), and sets ASSIGN_GRAPH_APP_ROLES to false when the
# deployer may not make the admin grants. With NETWORK_ISOLATION=true it checks that the Microsoft.App resource
# provider is registered (asks to register it at a terminal, or stops with the command). On an upgrade it records the
# connector client's redirect URLs in CONNECTOR_REDIRECT_URIS while that was never set. These need az CLI signed in.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')

$graph = 'https://graph.microsoft.com/v1.0'
$envName = $env:AZURE_ENV_NAME
$subscription = $env:AZURE_SUBSCRIPTION_ID
$isolation = "$env:NETWORK_ISOLATION".ToLowerInvariant() -eq 'true'
$privilegedRoleAdmin = 'e8611ab8-c189-46e8-94e1-60213ab1f814'
$globalAdmin = '62e90394-69f5-4237-9190-012177145e10'

# 0. Who receives the alerts: one or more addresses, comma-separated; never nobody.
function Test-Addresses([string]$Value) {
    if (-not $Value -or $Value -match '(^,|,$|,,)') { return $false }
    foreach ($address in $Value.Split(',')) {
        if ($address -notmatch '^[^@\s]+@[^@\s.][^@\s]*\.[^@\s.]+$') { return $false }
    }
    return $true
}
$alertEmail = $env:ALERT_EMAIL
if (-not $alertEmail -and -not [Console]::IsInputRedirected) {
    Write-Host "Alerts (the app stopped, deliveries failing, a Graph subscription about to expire, ...) are e-mailed."
    $alertEmail = Read-Host "E-mail address(es) that receive them, comma-separated"
}
if (-not (Test-Addresses $alertEmail)) {
    if (-not $alertEmail) {
        Write-Host "STOP: ALERT_EMAIL is not set, so no alert would reach anybody. Set who receives them, then azd up again:"
    } else {
        Write-Host "STOP: '$alertEmail' is not a comma-separated list of e-mail addresses. Set who receives the alerts:"
    }
    Write-Host "    azd env set ALERT_EMAIL ops@contoso.com            (several: a@contoso.com,b@contoso.com)"
    exit 1
}
if ($alertEmail -ne $env:ALERT_EMAIL) {
    azd env set ALERT_EMAIL $alertEmail
    Write-Host "ok: alerts go to $alertEmail (ALERT_EMAIL)"
}

$az = Get-Command az -ErrorAction SilentlyContinue
if ($az) { az account show --output none 2>$null }
if (-not $az -or $LASTEXITCODE -ne 0) {
    Write-Host "warning: az CLI is missing or not signed in (az login): skipped the checks for soft-deleted app"
    Write-Host "  registrations and for the rights the admin grants need. If provisioning then fails on"
    Write-Host "  'appRoleAssignedTo' or 'oauth2PermissionGrants' (Authorization_RequestDenied), run"
    Write-Host "      azd env set ASSIGN_GRAPH_APP_ROLES false"
    Write-Host "  and azd up again; an administrator makes the grants afterwards (scripts/grant-graph-permissions.ps1)."
    if ($isolation) {
        Write-Host "  NETWORK_ISOLATION is on: also check that the Microsoft.App resource provider is registered"
        Write-Host "      az provider show --namespace Microsoft.App --query registrationState --output tsv"
    }
    exit 0
}

# 3. Flex Consumption's virtual network integration needs the Microsoft.App resource provider (see the .sh twin).
if ($isolation) {
    $scope = @()
    if ($subscription) { $scope = @('--subscription', $subscription) }
    $state = az provider show --namespace Microsoft.App @scope --query registrationState --output tsv 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $state) { $state = 'unknown' }
    if ($state -eq 'Registered') {
        Write-Host "ok: the Microsoft.App resource provider is registered (NETWORK_ISOLATION needs it)"
    } else {
        $register = "az provider register --namespace Microsoft.App $(if ($subscription) { "--subscription $subscription " })--wait"
        $answer = ''
        if (-not [Console]::IsInputRedirected) {
            Write-Host "NETWORK_ISOLATION integrates the app with a virtual network, which needs the Microsoft.App resource"
            Write-Host "provider in this subscription; it is $state. Registering it changes nothing else and costs nothing."
            $answer = Read-Host "Register it now ($register)? [y/N]"
        }
        if ($answer -match '^(y|yes)$') {
            az provider register --namespace Microsoft.App @scope --wait
            if ($LASTEXITCODE -ne 0) {
                Write-Host "STOP: registering Microsoft.App failed (it needs the right to register providers on the subscription,"
                Write-Host "e.g. Contributor). Ask someone who has it to run: $register"
                exit 1
            }
            Write-Host "ok: registered the Microsoft.App resource provider"
        } else {
            Write-Host "STOP: NETWORK_ISOLATION is on, and the Microsoft.App resource provider is not registered in this"
            Write-Host "subscription ($state): the app's virtual network integration would fail. Register it, then azd up again:"
            Write-Host "    $register"
            Write-Host "or turn isolation off: azd env set NETWORK_ISOLATION false"
            exit 1
        }
    }
}

if ($envName) {
    $names = @("Bookings triggers API ($envName)", "Bookings triggers connector ($envName)")
    $url = "$graph/directory/deletedItems/microsoft.graph.application?`$select=id,displayName,deletedDateTime&`$top=999"
    $deleted = @()
    $answer = az rest --method GET --url $url 2>$null
    if ($LASTEXITCODE -eq 0) {
        $deleted = @(($answer | ConvertFrom-Json).value | Where-Object { $names -contains $_.displayName })
    }
    if ($deleted.Count -gt 0) {
        Write-Host "STOP: app registrations of the environment '$envName' were deleted less than 30 days ago. Entra keeps"
        Write-Host "them soft-deleted with their unique names, so deploying would fail creating them again."
        foreach ($app in $deleted) { Write-Host "  $($app.displayName) (object id $($app.id), deleted $($app.deletedDateTime))" }
        Write-Host "Either restore them (keeps their client ids, so an imported connector and its flows keep working):"
        foreach ($app in $deleted) { Write-Host "    az rest --method POST --url $graph/directory/deletedItems/$($app.id)/restore" }
        Write-Host "or delete them for good (new client ids; re-import the connector):"
        foreach ($app in $deleted) { Write-Host "    az rest --method DELETE --url $graph/directory/deletedItems/$($app.id)" }
        Write-Host "or deploy as another environment: azd env new <name>. Then run azd up again."
        exit 1
    }
}

if ($env:ASSIGN_GRAPH_APP_ROLES -ne 'false') {
    $answer = az rest --method GET --url "$graph/me/transitiveMemberOf/microsoft.graph.directoryRole?`$select=roleTemplateId" 2>$null
    if ($LASTEXITCODE -ne 0) {
        Write-Host "warning: could not read your directory roles; the admin grants are attempted (ASSIGN_GRAPH_APP_ROLES=true)."
        Write-Host "  If provisioning fails on them, run: azd env set ASSIGN_GRAPH_APP_ROLES false, then azd up again."
    } else {
        $roles = @(($answer | ConvertFrom-Json).value | ForEach-Object { $_.roleTemplateId })
        if ($roles -contains $privilegedRoleAdmin -or $roles -contains $globalAdmin) {
            Write-Host "ok: you may make the admin grants (Privileged Role Administrator or Global Administrator)"
        } else {
            azd env set ASSIGN_GRAPH_APP_ROLES false
            Write-Host "note: you are neither Privileged Role Administrator nor Global Administrator, so the Microsoft Graph"
            Write-Host "  permissions and the tenant-wide consents cannot be granted during this deployment:"
            Write-Host "  ASSIGN_GRAPH_APP_ROLES is now false. The app deploys; the post-provision step prints what an"
            Write-Host "  administrator runs afterwards."
        }
    }
}
# 4. Redirect URLs an earlier version added out of band: recorded before the provision declares the list
# (scripts/preprovision.sh says why).
$globalRedirect = 'https://global.consent.azure-apim.net/redirect'
if ($env:CONNECTOR_CLIENT_APP_ID -and $null -eq [Environment]::GetEnvironmentVariable('CONNECTOR_REDIRECT_URIS')) {
    $current = @(az ad app show --id $env:CONNECTOR_CLIENT_APP_ID --query "web.redirectUris[]" -o tsv 2>$null)
    $adopted = @($current | Where-Object { $_ -like 'https://*' -and $_ -ne $globalRedirect } | Select-Object -Unique)
    if ($adopted.Count -gt 0) {
        azd env set CONNECTOR_REDIRECT_URIS ($adopted -join ',')
        Write-Host "ok: kept the connector client's redirect URLs an earlier version added (now in CONNECTOR_REDIRECT_URIS):"
        Write-Host "    $($adopted -join ',')"
    }
}
exit 0
