// Network isolation (parameter networkIsolation, off by default): the storage account behind private endpoints,
// reachable only from a virtual network the Function App is integrated with. Flex Consumption integrates with a
// subnet delegated to Microsoft.App/environments (the Microsoft.App resource provider must be registered in the
// subscription: scripts/preprovision.sh checks it) and sends all its outbound traffic through it: Route All is
// implied, so the subnet's network security group applies to every outbound call
// (learn.microsoft.com/azure/azure-functions/functions-networking-options#regional-virtual-network-integration;
// the same delegation as Azure-Samples' Flex Consumption templates, e.g. functions-quickstart-python-http-azd vnet.bicep).
// The app's inbound side stays public: Graph must reach the notification URL and Power Automate the registration
// API, and neither can enter a virtual network.
//
// Outbound beyond storage (Microsoft Graph, Entra ID token and key endpoints, Application Insights ingestion, the
// flows' callback URLs) is HTTPS to public endpoints. It leaves from the app's own outbound addresses, as without
// the network ("unless you provide routes that direct the traffic elsewhere", same page), so no NAT gateway is
// needed; the security group allows it by name (allow-https-outbound) so that a deny-outbound rule added later
// below it (priority > 100) cannot cut the app off from Graph. Application Insights needs no private link scope:
// ingestion stays public and Entra-authenticated (infra/README.md "Network isolation").
param namePrefix string
param location string
param tags object
param storageAccountId string
@description('Address space of the virtual network.')
param addressPrefix string = '10.20.0.0/16'
@description('The subnet the app is integrated with (delegated to Flex Consumption).')
param appSubnetPrefix string = '10.20.0.0/24'
@description('The subnet of the storage account\'s private endpoints.')
param privateEndpointSubnetPrefix string = '10.20.1.0/24'

// One private endpoint (and DNS zone) per storage service the app and the Functions runtime use.
var storageServices = [
  'blob'
  'queue'
  'table'
]

// Inbound from the internet is not needed on either subnet. Outbound: HTTPS to the internet, stated (see the top).
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${namePrefix}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        // Graph, Entra ID, Application Insights ingestion and the flows' callback URLs: all HTTPS.
        name: 'allow-https-outbound'
        properties: {
          priority: 100
          direction: 'Outbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: 'Internet'
          destinationPortRange: '443'
        }
      }
      {
        name: 'deny-internet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${namePrefix}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for service in storageServices: {
  name: 'privatelink.${service}.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
}]

resource dnsLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (service, i) in storageServices: {
  parent: dnsZones[i]
  name: '${namePrefix}-${service}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource endpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for (service, i) in storageServices: {
  name: '${namePrefix}-st-${service}-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: 'storage-${service}'
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource dnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (service, i) in storageServices: {
  parent: endpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: dnsZones[i].id
        }
      }
    ]
  }
}]

output appSubnetId string = vnet.properties.subnets[0].id
output storageServices array = storageServices
