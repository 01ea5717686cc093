// Entra ID objects, declared with the Microsoft Graph Bicep extension:
//   - the API app registration that the custom connector signs in to (its token audience),
//   - the connector's client app registration (what Power Automate signs users in with),
//   - the API registration's federated identity credential: it trusts the app's managed identity, so the
//     on-behalf-of exchange (the business dropdown, the caller's addresses) needs no secret,
//   - Microsoft Graph application permissions for the app's managed identity (app role assignments),
//   - the Microsoft Graph delegated permissions the API registration uses on behalf of the signed-in user.
// Which permission each Graph call needs, with its documentation page: infra/README.md, "Microsoft Graph
// permissions" (tests/infra checks these grants against graph_sandbox/permissions.py, the table the sandbox
// enforces).
//
// What this file cannot do, and scripts/postprovision.sh reports or does instead:
//   - create the connector client's secret (the extension does not create password credentials, and a
//     secret must not pass through deployment history or azd's .env): scripts/connector-secret.sh;
//   - admin grants when the deployer lacks the right to make them (Microsoft Graph app roles need
//     Privileged Role Administrator or Global Administrator): deploy with ASSIGN_GRAPH_APP_ROLES=false and
//     let an admin run scripts/grant-graph-permissions.sh, which makes the same grants with az CLI;
//   - learn the per-connector redirect URL Power Automate shows once the connector exists: it is declared
//     here all the same (connectorRedirectUris), from the azd environment value CONNECTOR_REDIRECT_URIS that
//     scripts/connector-secret.sh --redirect-uri sets.
//
// Declared state: the extension makes each declared property what this file says on every deployment (Graph
// objects are upserted by uniqueName, https://learn.microsoft.com/graph/templates/concept-uniquely-named-resources),
// so a collection property declared here (web.redirectUris, identifierUris, requiredResourceAccess,
// api.oauth2PermissionScopes, api.preAuthorizedApplications) loses on the next `azd provision` whatever was
// added to it out of band (msgraph-bicep-types#197 on these collections). Each is therefore owned here, and no
// script adds to one of them without also recording it where this file reads it. Not declared, so left alone:
// passwordCredentials (the extension does not support them, https://learn.microsoft.com/graph/templates/limitations:
// the connector's secrets survive every provision), appRoles, and federated credentials other than the one
// below (each a child resource of its own, https://learn.microsoft.com/graph/templates/concept-relationships-in-graph-types).
//
// Kept in its own file, deployed as a module: checkov's Bicep parser (pycep-parser 0.5.1) cannot read
// the `extension` keyword, so checkov skips this folder and tests/infra parses it with pycep 0.7.
extension microsoftGraphV1

@description('Short unique token of this environment; makes the registrations\' unique names.')
param resourceToken string
param environmentName string
@description('Object (principal) id of the app\'s user-assigned managed identity.')
param managedIdentityPrincipalId string
@description('Make the admin grants: Graph application permissions for the managed identity, consent to the connector sign-in scopes and to the API\'s delegated Graph permissions (needs Privileged Role Administrator).')
param assignGraphAppRoles bool
@description('Grant the managed identity its Graph application permissions here. False for an identity created by this very deployment: Entra may not have replicated it yet (msgraph-bicep-types issue 193), and scripts/postprovision.sh grants them instead, retrying.')
param assignManagedIdentityRoles bool
@description('Also grant Bookings.ReadWrite.All and BookingsAppointment.ReadWrite.All (cancel with a reason through Graph).')
param enableCancelWithReason bool
@description('Redirect URLs of the connector client besides the global one, comma-separated: the per-connector URLs Power Automate shows on the connector\'s Security tab (redirectMode GlobalPerConnector).')
param connectorRedirectUris string = ''

var graphAppId = '00000003-0000-0000-c000-000000000000'
// Power Automate / Power Apps custom connectors redirect OAuth sign-ins here.
var connectorRedirectUri = 'https://global.consent.azure-apim.net/redirect'
// Parsed here rather than in main.bicep: checkov's parser (pycep 0.5.1) cannot read lambdas, and skips this folder.
var perConnectorRedirectUris = map(filter(split(connectorRedirectUris, ','), uri => !empty(trim(uri))), uri => trim(uri))
var scopeValue = 'user_impersonation'
// Stable across deployments, so the connector's scope never changes id.
var scopeId = guid(tenant().tenantId, resourceToken, scopeValue)
// Application permissions (the managed identity calls Graph as itself): read Bookings businesses, staff,
// services, custom questions, appointments; read the business mailboxes' events and subscribe to them.
var readRoles = [
  'Calendars.Read'
  'Bookings.Read.All'
]
// Cancelling an appointment app-only: its page lists Bookings.ReadWrite.All (and not
// BookingsAppointment.ReadWrite.All), the other appointment pages BookingsAppointment.ReadWrite.All. Both are
// granted, so the action works whichever Graph follows.
var cancelRoles = [
  'Bookings.ReadWrite.All'
  'BookingsAppointment.ReadWrite.All'
]
var graphRoles = enableCancelWithReason ? concat(readRoles, cancelRoles) : readRoles
var assignedRoles = (assignGraphAppRoles && assignManagedIdentityRoles) ? graphRoles : []

// Delegated permissions of the API registration, used on behalf of the signed-in user (on-behalf-of flow):
// listing Bookings businesses (application permissions are "Not supported" there under one reading of its
// page) and reading the user's own profile (/me).
var delegatedScopes = [
  'Bookings.Read.All'
  'User.Read'
]

// Delegated Graph scopes the connector's sign-in needs (no data access): sign-in, refresh tokens, profile.
var signInScopes = [
  'openid'
  'offline_access'
  'User.Read'
]

resource graphSp 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Permission ids are looked up by name on the Graph service principal rather than hard-coded.
var graphScopes = graphSp.oauth2PermissionScopes
var graphAppRoleDefinitions = graphSp.appRoles

// The custom connector's OAuth client. Besides sign-in it only needs the API's scope, which the API app
// pre-authorizes, so users are not prompted for it.
resource connectorApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: 'bookings-triggers-connector-${resourceToken}'
  displayName: 'Bookings triggers connector (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  web: {
    // The whole list, every time: a URL missing here is removed from the registration by this deployment.
    redirectUris: union([connectorRedirectUri], perConnectorRedirectUris)
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [for scopeName in signInScopes: {
        id: filter(graphScopes, s => s.value == scopeName)[0].id
        type: 'Scope'
      }]
    }
  ]
}

resource connectorSp 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: connectorApp.appId
}

// The API: the registration routes accept only v2 access tokens issued for it (aud = its client id).
resource apiApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: 'bookings-triggers-api-${resourceToken}'
  displayName: 'Bookings triggers API (${environmentName})'
  signInAudience: 'AzureADMyOrg'
  // api://<tenant id>/<name> is one of Entra's secure identifier URI patterns and needs no verified domain.
  identifierUris: [
    'api://${tenant().tenantId}/bookings-triggers-${resourceToken}'
  ]
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [for scopeName in delegatedScopes: {
        id: filter(graphScopes, s => s.value == scopeName)[0].id
        type: 'Scope'
      }]
    }
  ]
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: [
      {
        id: scopeId
        value: scopeValue
        type: 'User'
        isEnabled: true
        adminConsentDisplayName: 'Register Bookings appointment triggers'
        adminConsentDescription: 'Lets Power Automate register and remove appointment triggers of Bookings businesses the signed-in user administers.'
        userConsentDisplayName: 'Register Bookings appointment triggers'
        userConsentDescription: 'Lets Power Automate register and remove appointment triggers of Bookings businesses you administer.'
      }
    ]
    preAuthorizedApplications: [
      {
        appId: connectorApp.appId
        delegatedPermissionIds: [
          scopeId
        ]
      }
    ]
  }
}

resource apiSp 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: apiApp.appId
}

// The API registration's only credential: it trusts the Function App's user-assigned managed identity, whose
// token for api://AzureADTokenExchange is the client assertion of the on-behalf-of exchange (no secret exists).
// https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
resource apiTrustsManagedIdentity 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = {
  name: '${apiApp.uniqueName}/function-app-managed-identity'
  description: 'The Function App of ${environmentName} exchanges callers\' tokens on their behalf as this app.'
  issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  subject: managedIdentityPrincipalId
  audiences: [
    'api://AzureADTokenExchange'
  ]
}

// Tenant-wide (admin) consent to the connector's sign-in scopes, so no user sees a consent prompt even
// where user consent is disabled. An admin grant, like the app roles below: same switch.
resource connectorConsent 'Microsoft.Graph/oauth2PermissionGrants@v1.0' = if (assignGraphAppRoles) {
  clientId: connectorSp.id
  resourceId: graphSp.id
  consentType: 'AllPrincipals'
  scope: join(signInScopes, ' ')
}

// Tenant-wide (admin) consent to the API's delegated Graph permissions: the on-behalf-of exchange has no
// user in front of a consent prompt (AADSTS65001 without it). Same switch as the other admin grants.
resource apiConsent 'Microsoft.Graph/oauth2PermissionGrants@v1.0' = if (assignGraphAppRoles) {
  clientId: apiSp.id
  resourceId: graphSp.id
  consentType: 'AllPrincipals'
  scope: join(delegatedScopes, ' ')
}

// Application permissions for the managed identity: it calls Graph app-only, as itself, no secret.
resource graphAppRoles 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in assignedRoles: {
  principalId: managedIdentityPrincipalId
  resourceId: graphSp.id
  appRoleId: filter(graphAppRoleDefinitions, r => r.value == role)[0].id
}]

output apiAppId string = apiApp.appId
output apiIdentifierUri string = apiApp.identifierUris[0]
output apiScope string = '${apiApp.identifierUris[0]}/${scopeValue}'
output connectorAppId string = connectorApp.appId
output connectorSpId string = connectorSp.id
output apiSpId string = apiSp.id
output graphAppRoles array = assignedRoles
output apiDelegatedScopes array = delegatedScopes
