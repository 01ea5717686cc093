// The admins' workbook in Application Insights: flows per mailbox against the limit, appointment events
// and deliveries over time, end-to-end latency, subscription renewals, dead letters.
// Each chart's query is a file in infra/queries/, the same text the README's operations section shows.

param location string
param tags object
param applicationInsightsId string
param displayName string = 'Bookings triggers'

var timeRangeParameter = {
  type: 9
  content: {
    version: 'KqlParameterItem/1.0'
    parameters: [
      {
        id: '3c1d1a8e-5a55-4f5c-9c57-6f0a8d1b2c01'
        name: 'TimeRange'
        type: 4
        isRequired: true
        value: {
          durationMs: 86400000
        }
        typeSettings: {
          allowCustom: true
        }
      }
    ]
  }
  name: 'parameters'
}

var charts = [
  {
    name: 'flows-per-mailbox'
    title: 'Flows per mailbox against the limit'
    visualization: 'table'
    // Counts outlive the picked time range: look back over the whole retention.
    timeContext: { durationMs: 2592000000 }
    query: loadTextContent('../queries/flows-per-mailbox.kql')
  }
  {
    name: 'events-and-deliveries'
    title: 'Appointment events and deliveries'
    visualization: 'timechart'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/events-and-deliveries.kql')
  }
  {
    name: 'end-to-end-latency'
    title: 'End-to-end latency, change to flow (seconds)'
    visualization: 'timechart'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/end-to-end-latency.kql')
  }
  {
    name: 'renewals'
    title: 'Graph subscription renewals'
    visualization: 'barchart'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/renewals.kql')
  }
  {
    name: 'dead-letters'
    title: 'Dead letters by flow'
    visualization: 'table'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/dead-letters.kql')
  }
]

var chartItems = [for chart in charts: {
  type: 3
  name: chart.name
  content: {
    version: 'KqlItem/1.0'
    title: chart.title
    query: chart.query
    size: 0
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: chart.visualization
    timeContext: chart.timeContext
    timeContextFromParameter: chart.name == 'flows-per-mailbox' ? null : 'TimeRange'
  }
}]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'intro'
      content: {
        json: '## Bookings appointment triggers\nFlows per mailbox, appointment events and deliveries, latency, Graph subscription renewals and dead letters. Alert rules use the same queries (infra/queries).'
      }
    }
    timeRangeParameter
  ], chartItems)
  fallbackResourceIds: [
    applicationInsightsId
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(applicationInsightsId, 'bookings-triggers-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: string(workbookContent)
    version: '1.0'
  }
}

output id string = workbook.id
