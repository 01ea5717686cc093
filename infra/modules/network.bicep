// Network isolation (parameter networkIsolation, off by default): the storage account behind private endpoints,
// reachable only from a virtual network the Function App is integrated with. Flex Consumption integrates with a
// subnet delegated to Microsoft.App/environments and sends its outbound traffic through it
// (learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#enable-virtual-network-integration; the
// same delegation as Azure-Samples' Flex Consumption templates, e.g. remote-mcp-apim-functions-python vnet.bicep).
// The app's inbound side stays public: Graph must reach the notification URL and Power Automate the registration
// API, and neither can enter a virtual network. Application Insights ingestion stays public too (Entra-only).

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

// Inbound from the internet is not needed on either subnet; outbound stays as Azure's defaults allow.
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${namePrefix}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
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
