// The app's one identity: a user-assigned managed identity. It reaches Storage, Application Insights and
// Microsoft Graph with Entra tokens, so no key, connection string or client secret exists anywhere.
// User-assigned (not system-assigned) because its client id must be known before the app exists: it
// goes into app settings, role assignments and Graph app role assignments in the same deployment.

param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
