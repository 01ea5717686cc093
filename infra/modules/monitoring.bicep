// Where admins watch the app: a Log Analytics workspace and a workspace-based Application Insights.
// Local (key) authentication is off on both: telemetry is accepted only with an Entra token of an
// identity holding Monitoring Metrics Publisher, so the connection string holds no secret.

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    features: {
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    RetentionInDays: retentionInDays
  }
}

output workspaceId string = workspace.id
output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
// Not a secret with local auth disabled: it names the resource and its ingestion endpoint only.
output connectionString string = appInsights.properties.ConnectionString
