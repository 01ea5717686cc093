// Storage for the Functions runtime (deployment package, timers' leases) and for the app's own state:
// every table and queue of shared/adapters/storage.py, created here because on Azure the app never creates them.
// Keys are off (allowSharedKeyAccess: false): the app and the runtime use their managed identity.
//
// Keep tableNames and queueNames in step with shared/adapters/storage.py (TABLES, QUEUES, poison_queue());
// tests/infra checks it, and says what is missing.

param name string
param location string
param tags object
param deploymentContainerName string
@description('Replication. Geo-redundant by default (available in every region): the flow registrations live only here.')
@allowed(['Standard_GRS', 'Standard_GZRS', 'Standard_ZRS', 'Standard_LRS'])
param skuName string = 'Standard_GRS'
@description('Reachable only through private endpoints (modules/network.bicep): public network access off. infra/main.bicep deploys this module a second time with it true, after the app is integrated with the network, when isolation is turned on (module storagePrivate).')
param privateOnly bool = false
@description('A CanNotDelete lock on the account (main.bicep storageDeleteLock).')
param deleteLock bool = false

// The daily export of the flow registrations (shared/services/backup.py, container name FLOW_BACKUP_CONTAINER in
// shared/adapters/blobs.py): one new blob per run, kept backupRetentionDays, every overwritten or deleted state kept
// as a version (versioning) and a deleted blob or container for 7 days (soft delete).
var backupContainerName = 'flow-backups'
var backupRetentionDays = 30

var tableNames = [
  'mailboxes'
  'subscriptions'
  'deliverylog'
]

// Each queue and the `<queue>-poison` queue the Functions runtime moves a message to after the last
// failed attempt. Declaring the poison queues lets admins and alerts rely on them existing.
var queueNames = [
  'mailbox-changes'
  'mailbox-changes-poison'
  'deliveries'
  'deliveries-poison'
  'subscription-tasks'
  'subscription-tasks-poison'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:by default (networkIsolation off) the Function App reaches storage over its public endpoint; keys are off, so every request needs an Entra token of an identity holding a data role on this account. With networkIsolation on, public access is disabled (privateOnly), which checkov cannot resolve
  // checkov:skip=CKV_AZURE_206:replication is the skuName parameter (default Standard_GRS, geo-redundant; GZRS, ZRS or LRS by choice), which checkov cannot resolve
  // checkov:skip=CKV_AZURE_59:as CKV_AZURE_35: public endpoint by default, Entra-only access (allowSharedKeyAccess false, no anonymous blob access); off with networkIsolation
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    supportsHttpsTrafficOnly: true
    // As Microsoft's Flex Consumption templates do with their vnetEnabled switch.
    networkAcls: privateOnly ? {
      bypass: 'None'
      defaultAction: 'Deny'
    } : {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Versioning keeps every earlier state of a blob written or deleted
    // (learn.microsoft.com/azure/storage/blobs/versioning-overview); soft delete keeps a deleted blob or version
    // 7 days (learn.microsoft.com/azure/storage/blobs/soft-delete-blob-overview). Versioning is per account: the
    // runtime's blobs (timer status, package) get versions too, which the lifecycle rule below deletes.
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption reads the deployment package from here with the managed identity.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource backupContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: backupContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Versioning "may result in additional costs ... use a lifecycle management policy to automatically delete old
// versions" (versioning-overview): previous versions of every blob go after backupRetentionDays, and so do exports.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-previous-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob', 'appendBlob']
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: backupRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'expire-flow-exports'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['${backupContainerName}/flows-']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: backupRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    blobService
  ]
}

// Locking the account keeps `azd down` and a mistaken delete from removing it with every flow registration and
// every export (Resource Manager locks: learn.microsoft.com/azure/azure-resource-manager/management/lock-resources).
// It protects the account, not the data in it: "Locking a storage account does not protect containers or blobs
// within that account from being deleted or overwritten" (learn.microsoft.com/azure/storage/common/lock-account-resource);
// the exports, versioning and soft delete do that.
resource lock 'Microsoft.Authorization/locks@2020-05-01' = if (deleteLock) {
  name: 'keep-flow-registrations'
  scope: account
  properties: {
    level: 'CanNotDelete'
    notes: 'Holds every flow registration (table mailboxes) and their exports (container flow-backups). Remove this lock before azd down; restore: infra/README.md.'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output backupContainerName string = backupContainer.name
output tableNames array = tableNames
output queueNames array = queueNames
