// The Function App: Flex Consumption (FC1), Python 3.11, running as the user-assigned managed identity.
//
// App settings are identity-based only. Storage is reached by service URIs with the managed identity
// (AzureWebJobsStorage__*), Graph by managed-identity tokens (GRAPH_CREDENTIAL=managedidentity), and
// Application Insights by Entra auth (APPLICATIONINSIGHTS_AUTHENTICATION_STRING). No key, connection
// string with a key, or client secret is set: GRAPH_CLIENT_SECRET is deliberately absent.
//
// `appSettings` below names every setting of shared/adapters/settings.py SPECS; tests/infra checks that. They are
// set as siteConfig.appSettings of the site (not a separate sites/config resource, which checkov mistakes
// for the site's web configuration).
// Flex Consumption rejects FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION and
// WEBSITE_RUN_FROM_PACKAGE as app settings: the runtime comes from functionAppConfig instead.

param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string

@allowed([512, 2048, 4096])
param instanceMemoryMB int
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int
@description('Instances kept warm for the HTTP functions (0 = scale from zero; 1 avoids cold starts on Graph notifications, at a cost).')
@minValue(0)
param alwaysReadyHttpInstances int
@description('Spread the plan over availability zones (only in regions that offer it for Flex Consumption).')
param zoneRedundant bool
@description('Subnet (delegated to Microsoft.App/environments) the app sends its outbound traffic through; empty: none.')
param virtualNetworkSubnetId string = ''

// Application settings (see shared/adapters/settings.py for what each one does).
param apiAudience string
@description('The delegated scope of the API app registration callers\' tokens must carry (its name, as in scp).')
param apiScopeName string
@description('Client ids whose user tokens the API accepts (azp): the custom connector\'s app registration.')
param allowedClientIds string
param graphEndpoint string
param entraAuthority string
param publicBaseUrl string
param maxFlowsPerMailbox int
param callbackHostAllowlist string
param renewalSchedule string
param resyncSchedule string
param resyncSpreadMinutes int
param backupSchedule string
param logLevel string
@description('When the connector client secret expires (ISO 8601), as scripts/connector-secret.sh recorded it; empty when unknown.')
param connectorCredentialExpiresAt string = ''

var tenantId = tenant().tenantId

var appSettings = {
  // Functions runtime storage: identity-based, never a connection string.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint

  // Telemetry: the connection string names the resource only; local auth is off, so ingestion needs
  // an Entra token of this identity (Monitoring Metrics Publisher).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
  // The worker makes each invocation's trace context current, so app spans, events and logs carry the host's
  // operation_Id (learn.microsoft.com/azure/azure-functions/opentelemetry-howto). The app, not the worker,
  // configures the exporter: PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY stays unset, or all is sent twice.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'

  // The app's own settings (shared/adapters/settings.py SPECS).
  ENTRA_TENANT_ID: tenantId
  GRAPH_BASE_URL: '${graphEndpoint}/v1.0'
  GRAPH_CREDENTIAL: 'managedidentity'
  GRAPH_CLIENT_ID: identityClientId
  GRAPH_SCOPE: '${graphEndpoint}/.default'
  AUTH_ISSUER: '${entraAuthority}/${tenantId}/v2.0'
  AUTH_AUDIENCE: apiAudience
  AUTH_SCOPE: apiScopeName
  AUTH_ALLOWED_CLIENT_IDS: allowedClientIds
  AUTH_JWKS_URL: '${entraAuthority}/${tenantId}/discovery/v2.0/keys'
  // On behalf of the caller (the business dropdown, the caller's addresses): the API registration exchanges
  // the caller's token; a federated identity credential trusting this identity is its only credential.
  API_CLIENT_ID: apiAudience
  API_CREDENTIAL: 'federated'
  ENTRA_AUTHORITY: entraAuthority
  ENTRA_CA_FILE: ''
  PUBLIC_BASE_URL: publicBaseUrl
  MAX_FLOWS_PER_MAILBOX: string(maxFlowsPerMailbox)
  CALLBACK_HOST_ALLOWLIST: callbackHostAllowlist
  ALLOW_LOOPBACK_CALLBACKS: 'false'
  RENEWAL_SCHEDULE: renewalSchedule
  RENEWAL_WINDOW_MINUTES: '1440'
  SUBSCRIPTION_WRITES_PER_SECOND: '24'
  RESYNC_SCHEDULE: resyncSchedule
  RESYNC_SPREAD_MINUTES: string(resyncSpreadMinutes)
  RESYNC_HORIZON_DAYS: '180'
  RESYNC_PAST_DAYS: '7'
  DELTA_CHECK_SCHEDULE: '0 */4 * * * *'
  DELIVERY_RETRY_HOURS: '24'
  OUTBOX_RETENTION_HOURS: '168'
  DEAD_LETTER_RETENTION_DAYS: '30'
  DELIVERY_LOG_RETENTION_DAYS: '7'
  OUTBOX_SWEEP_SCHEDULE: '0 */5 * * * *'
  QUEUE_METRICS_SCHEDULE: '0 */5 * * * *'
  REMINDER_SCHEDULE: '0 * * * * *'
  DIRECTORY_REFRESH_SCHEDULE: '0 */10 * * * *'
  // Recorded by scripts/connector-secret.sh (azd env); the app warns from 30 days before.
  CONNECTOR_CREDENTIAL_EXPIRES_AT: connectorCredentialExpiresAt
  BACKUP_SCHEDULE: backupSchedule
  HEALTH_TIMEOUT_SECONDS: '3'
  LOG_LEVEL: logLevel
  // Traces sampled, events and errors never: docs/configuration.md.
  TELEMETRY_SAMPLING_RATIO: '0.01'
}

var appSettingsList = [for setting in items(appSettings): {
  name: setting.key
  value: setting.value
}]

var alwaysReady = alwaysReadyHttpInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyHttpInstances
  }
] : []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:zone redundancy of Flex Consumption exists only in some regions; the zoneRedundant parameter turns it on where offered
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Graph and Power Automate cannot present client certificates; callers are authenticated by Entra bearer tokens (registration API) and clientState (Graph)
  // checkov:skip=CKV_AZURE_222:Graph and Power Automate call the app over the public internet; there is no private caller to restrict access to (networkIsolation makes storage private, not the app's inbound side)
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales out on demand (maximumInstanceCount) and keeps warm instances with alwaysReadyHttpInstances, not with a fixed instance count
  // checkov:skip=CKV_AZURE_213:App Service health check is not offered on Flex Consumption; GET /api/health reports each dependency for external probes
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: appSettingsList
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReady
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP or Kudu basic (user name + password) publishing: azd deploys with an Entra token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
