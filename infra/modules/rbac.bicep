// What the app's managed identity may do, and nothing more: data-plane roles on its own storage account
// and publishing telemetry to its own Application Insights. Nothing at subscription or group scope.
// Optionally, read access to the same storage data for named administrators (adminPrincipalId): the account
// refuses keys, so `az storage ... --auth-mode login` and Storage Explorer answer 403 to anyone without a
// data role (https://learn.microsoft.com/azure/storage/tables/authorize-access-azure-active-directory).

param storageAccountName string
param applicationInsightsName string
param principalId string
@description('Object id of a user or group of administrators who may read the app\'s tables and queues (Storage Table Data Reader, Storage Queue Data Reader on the account). Empty: none.')
param adminPrincipalId string = ''
@description('What adminPrincipalId is: User or Group (a group names several administrators at once).')
@allowed(['User', 'Group'])
param adminPrincipalType string = 'User'
param backupContainerName string

// Built-in role definition ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // runtime: deployment package, host locks and timers
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // queue triggers, poison queues, app enqueues
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // mailbox state, snapshots, outbox
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // the flow exports (container flow-backups)
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Entra-authenticated telemetry ingestion
// Read only, for administrators (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage).
var adminReadRoles = [
  '76199698-9eea-4c19-bc75-cec21354c6b6' // Storage Table Data Reader: mailboxes, snapshots, outbox, dead letters
  '19e7f393-937e-4f77-808e-94535e297925' // Storage Queue Data Reader: peek the queues and poison queues
]
var adminAssignments = empty(adminPrincipalId) ? [] : adminReadRoles

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource backupContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${storageAccountName}/default/${backupContainerName}'
}

// What the export and the restore need, on their container only. Blob Data Owner above covers it today; this one
// keeps the exports working if the runtime's role is ever narrowed to its own containers.
resource backupWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(backupContainer.id, principalId, storageBlobDataContributor)
  scope: backupContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource adminReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in adminAssignments: {
  name: guid(storage.id, adminPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: adminPrincipalId
    principalType: adminPrincipalType
  }
}]
