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
// A stop-loss, not a budget: when a day's billable ingestion reaches it, the workspace stops collecting until its
// daily reset (an hour of its own), an event is written to the Operation table, and the daily-cap-reached alert
// fires (alerts over the app's telemetry are blind until the reset). -1: no cap.
// learn.microsoft.com/azure/azure-monitor/logs/daily-cap; workspaceCapping.dailyQuotaGb:
// learn.microsoft.com/azure/templates/microsoft.operationalinsights/workspaces
@minValue(-1)
param dailyCapGb int = 1

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    workspaceCapping: {
      dailyQuotaGb: dailyCapGb
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
output workspaceName string = workspace.name
output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
// Not a secret with local auth disabled: it names the resource and its ingestion endpoint only.
output connectionString string = appInsights.properties.ConnectionString
