// Everything `azd up` provisions for Bookings appointment triggers, in one resource group:
// a Flex Consumption Function App running as a user-assigned managed identity, Storage without keys,
// Log Analytics + Application Insights with local auth disabled, alert rules and a workbook, and (through
// the Microsoft Graph Bicep extension) the Entra app registrations and Graph permissions.
//
// Resources are declared in this repository's modules, not taken from a registry: checkov and
// tests/infra read every property. infra/README.md explains deployment and operations.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; makes the resource names unique.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer Flex Consumption.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Memory of each Function App instance, in MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Most instances the Function App scales out to. Bounds cost and the load on Graph.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Concurrent HTTP invocations per instance. The app is async end to end and shares storage writes between concurrent Graph notifications; at 1 every request of a Graph burst would wait for an instance of its own.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Instances kept warm for the HTTP functions. 0 scales from zero (cheapest); 1 keeps Graph notification answers fast after idle periods.')
@minValue(0)
param alwaysReadyHttpInstances int = 0

@description('Spread the Function App plan over availability zones (only where Flex Consumption offers it).')
param zoneRedundant bool = false

@description('Storage replication. Geo-redundant by default (offered in every region): the flow registrations live only in this account.')
@allowed(['Standard_GRS', 'Standard_GZRS', 'Standard_ZRS', 'Standard_LRS'])
param storageSkuName string = 'Standard_GRS'

@description('Put the storage account behind private endpoints in a virtual network the Function App is integrated with (Flex Consumption). Off by default: it adds a VNet, three private endpoints and DNS zones; the app stays reachable from the internet, as Graph and Power Automate need.')
param networkIsolation bool = false

@description('Whether the previous provision of this environment left the storage account refusing public traffic (azd: STORAGE_PRIVATE, an output of this template; false on the first). Only then may the storage account stay private while the app is (re)integrated; otherwise it turns private in a later step, once the app reaches it through the network (module storagePrivate).')
param storageAlreadyPrivate bool = false

@description('Make the admin grants during deployment: Graph application permissions for the managed identity and tenant-wide consent to the connector sign-in scopes. Needs Privileged Role Administrator; without it, deploy with false and have an admin run scripts/grant-graph-permissions.sh.')
param assignGraphAppRoles bool = true

@description('Principal id of the managed identity as the previous provision of this environment output it (azd: MANAGED_IDENTITY_PRINCIPAL_ID; empty on the first). Only an identity that already existed gets its Graph application permissions here: a new one may not have replicated in Entra yet, and the assignment would fail the deployment (github.com/microsoftgraph/msgraph-bicep-types/issues/193); for it the post-provision step grants them, retrying until Entra knows it.')
param previousManagedIdentityPrincipalId string = ''

@description('Also grant BookingsAppointment.ReadWrite.All, needed by the cancel-with-reason action.')
param enableCancelWithReason bool = false

@description('Per-connector redirect URLs of the connector client app, comma-separated (azd: CONNECTOR_REDIRECT_URIS, which scripts/connector-secret.sh --redirect-uri sets). Declared with the global one on every provision: a URL added to the app registration any other way is removed by the next one.')
param connectorRedirectUris string = ''

@description('When the connector client secret expires (ISO 8601; azd: CONNECTOR_CREDENTIAL_EXPIRES_AT, which scripts/connector-secret.sh sets). The app warns from 30 days before; empty: no warning.')
param connectorCredentialExpiresAt string = ''

@description('Microsoft Graph endpoint without version (national clouds differ).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Entra ID authority host (national clouds differ).')
param entraAuthority string = 'https://login.microsoftonline.com'

@description('Public base URL of the app when a custom domain fronts it. Empty: https://<app>.azurewebsites.net.')
param publicBaseUrl string = ''

@description('Flows (appointment triggers) allowed per Bookings mailbox.')
@minValue(1)
param maxFlowsPerMailbox int = 5

@description('Hosts flow callback URLs may point at; *.domain allows its subdomains.')
param callbackHostAllowlist string = '*.logic.azure.com,*.logic.azure.us,*.logic.azure.cn,*.flow.microsoft.com,*.powerautomate.com'

@description('NCRONTAB schedule of the subscription renewal timer.')
param renewalSchedule string = '0 */30 * * * *'

@description('NCRONTAB schedule of the periodic resync of every mailbox.')
param resyncSchedule string = '0 0 */6 * * *'

@description('Minutes over which each periodic resync spreads its mailboxes (0: all at once). Must be shorter than the shortest gap between two resyncSchedule runs: the app refuses to start otherwise.')
@minValue(0)
param resyncSpreadMinutes int = 50

@description('NCRONTAB schedule of the export of every flow registration to the flow-backups container (what scripts/restore-flows.sh restores from).')
param backupSchedule string = '0 30 2 * * *'

@description('A CanNotDelete lock on the storage account, which holds the only copy of the flow registrations and their exports. On by default: `azd down` then stops with ScopeLocked until the lock is removed (infra/README.md, "Removing the deployment").')
param storageDeleteLock bool = true

@allowed(['DEBUG', 'INFO', 'WARNING', 'ERROR'])
param logLevel string = 'INFO'

@description('Object id of a user or group of administrators who may read the app\'s tables and queues (azd: ADMIN_PRINCIPAL_ID; empty: none). The account refuses keys, so without a data role their `az storage --auth-mode login` answers 403.')
param adminPrincipalId string = ''

@description('What adminPrincipalId is: User or Group (azd: ADMIN_PRINCIPAL_TYPE).')
@allowed(['User', 'Group'])
param adminPrincipalType string = 'User'

// No default, and never empty: an action group without a receiver makes every alert silent. scripts/preprovision.sh
// asks for it (or stops with `azd env set ALERT_EMAIL ...`); a deployment that skips the hook stops here.
@minLength(3)
@description('E-mail addresses that receive every alert, comma-separated (azd: ALERT_EMAIL). Required.')
param alertEmail string

@description('Daily cap of the Log Analytics workspace, in GB of billable ingestion (azd: LOG_DAILY_CAP_GB). When reached, telemetry stops until the workspace\'s daily reset and the daily-cap-reached alert fires. -1: no cap. docs/operations.md says how the default was chosen.')
@minValue(-1)
param logDailyCapGb int = 1

@description('Monthly cost budget of the resource group in the billing currency (azd: MONTHLY_BUDGET); 80% spent and 100% forecast are e-mailed to ALERT_EMAIL. 0: no budget.')
@minValue(0)
param monthlyBudget int = 0

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
// The alert recipients ("a@x.com, b@y.com" is two). A blank one fails the deployment (no valid e-mail address),
// it is never dropped silently; scripts/preprovision.sh refuses such a list before.
var alertRecipients = [for address in split(alertEmail, ','): trim(address)]
var tags = {
  'azd-env-name': environmentName
  app: 'bookings-triggers'
}
var functionAppName = 'func-bookings-${resourceToken}'
// Flex Consumption reads the app package from this container.
var deploymentContainerName = 'app-package-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-bookings-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stbookings${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
    // Private here only when it already was: turning isolation on for a running app must not cut it off from its
    // storage before it is integrated with the network (storagePrivate, after functionApp, does that).
    privateOnly: networkIsolation && storageAlreadyPrivate
    deleteLock: storageDeleteLock
  }
}

module network 'modules/network.bicep' = if (networkIsolation) {
  name: 'network'
  scope: rg
  params: {
    namePrefix: 'bookings-${resourceToken}'
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-bookings-${resourceToken}'
    applicationInsightsName: 'appi-bookings-${resourceToken}'
    location: location
    tags: tags
    dailyCapGb: logDailyCapGb
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    principalId: identity.outputs.principalId
    adminPrincipalId: adminPrincipalId
    adminPrincipalType: adminPrincipalType
    backupContainerName: storage.outputs.backupContainerName
  }
}

module entra 'entra/graph.bicep' = {
  name: 'entra'
  scope: rg
  params: {
    resourceToken: resourceToken
    environmentName: environmentName
    managedIdentityPrincipalId: identity.outputs.principalId
    assignGraphAppRoles: assignGraphAppRoles
    assignManagedIdentityRoles: assignGraphAppRoles && previousManagedIdentityPrincipalId == identity.outputs.principalId
    enableCancelWithReason: enableCancelWithReason
    connectorRedirectUris: connectorRedirectUris
  }
}

module functionApp 'modules/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-bookings-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    zoneRedundant: zoneRedundant
    virtualNetworkSubnetId: networkIsolation ? network.outputs.appSubnetId : ''
    // v2 access tokens carry the API app's client id as `aud`.
    apiAudience: entra.outputs.apiAppId
    // Tokens must carry the API's own scope and come through the connector's registration (azp).
    apiScopeName: last(split(entra.outputs.apiScope, '/'))
    allowedClientIds: entra.outputs.connectorAppId
    graphEndpoint: graphEndpoint
    entraAuthority: entraAuthority
    publicBaseUrl: publicBaseUrl
    maxFlowsPerMailbox: maxFlowsPerMailbox
    callbackHostAllowlist: callbackHostAllowlist
    renewalSchedule: renewalSchedule
    resyncSchedule: resyncSchedule
    resyncSpreadMinutes: resyncSpreadMinutes
    backupSchedule: backupSchedule
    logLevel: logLevel
    connectorCredentialExpiresAt: connectorCredentialExpiresAt
  }
  // The app must not start before it may read its package and reach storage (privately, with networkIsolation).
  dependsOn: [
    rbac
    network
  ]
}

// The second step of network isolation: the same storage account, now refusing public traffic. A module is a
// deployment of its own, so ARM applies it to the account deployed above only once every deployment it depends on
// has finished: the app's virtualNetworkSubnetId set (functionApp) and the private endpoints with their DNS zone
// groups and network links in place (network). Until then the app keeps reaching storage, publicly or, once
// integrated, through the private endpoints. tests/infra/test_network_order.py checks the order.
module storagePrivate 'modules/storage.bicep' = if (networkIsolation) {
  name: 'storage-private'
  scope: rg
  params: {
    name: 'stbookings${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
    privateOnly: true
    deleteLock: storageDeleteLock
  }
  dependsOn: [
    functionApp
    network
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'bookings-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    workspaceId: monitoring.outputs.workspaceId
    alertRecipients: alertRecipients
    healthUrl: '${baseUrl}/api/health'
    monthlyBudget: monthlyBudget
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

var baseUrl = empty(publicBaseUrl) ? 'https://${functionApp.outputs.defaultHostName}' : publicBaseUrl

// azd stores these in .azure/<env>/.env; scripts/ and infra/README.md use them. None is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output FUNCTION_URL string = baseUrl
output API_BASE_URL string = '${baseUrl}/api'
output NOTIFICATION_URL string = '${baseUrl}/api/graph/notifications'
output LIFECYCLE_URL string = '${baseUrl}/api/graph/lifecycle'
output HEALTH_URL string = '${baseUrl}/api/health'
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output API_APP_CLIENT_ID string = entra.outputs.apiAppId
output API_APP_ID_URI string = entra.outputs.apiIdentifierUri
output API_SCOPE string = entra.outputs.apiScope
output CONNECTOR_CLIENT_APP_ID string = entra.outputs.connectorAppId
// The admin grants were made here (the consents, and the identity's Graph permissions when it already existed).
output GRAPH_APP_ROLES_ASSIGNED bool = assignGraphAppRoles
// False on the first provision (and with ASSIGN_GRAPH_APP_ROLES=false): scripts/postprovision.sh grants them.
output MANAGED_IDENTITY_GRAPH_ROLES_ASSIGNED bool = !empty(entra.outputs.graphAppRoles)
output ENABLE_CANCEL_WITH_REASON bool = enableCancelWithReason
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
// The Log Analytics workspace behind it (its daily cap: docs/operations.md, daily-cap-reached).
output LOG_ANALYTICS_NAME string = monitoring.outputs.workspaceName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output FLOW_BACKUP_CONTAINER string = storage.outputs.backupContainerName
output NETWORK_ISOLATION bool = networkIsolation
// Read back as storageAlreadyPrivate by the next provision (main.parameters.json).
output STORAGE_PRIVATE bool = networkIsolation
// The alert rules are named ALERT_NAME_PREFIX-<rule> (infra/modules/alerts.bicep; docs/operations.md uses them).
output ALERT_NAME_PREFIX string = 'bookings-${resourceToken}'
output ACTION_GROUP_NAME string = 'bookings-${resourceToken}-admins'
output AVAILABILITY_TEST_NAME string = alerts.outputs.availabilityTestName
