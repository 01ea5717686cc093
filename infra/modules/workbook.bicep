// The admins' workbook in Application Insights: flows per mailbox against the limit, appointment events and
// deliveries over time, deliveries and failures per flow, answer time to Graph notifications (p50/p99),
// end-to-end latency, subscription renewals and the renewal heartbeat with the earliest expiry, poison queue
// lengths, dead letters.
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
    name: 'deliveries-per-flow'
    title: 'Deliveries and failures per flow'
    visualization: 'table'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/deliveries-per-flow.kql')
  }
  {
    name: 'notification-answer-time'
    title: 'Answer time to Graph notifications (ms; Graph allows 3,000)'
    visualization: 'timechart'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/notification-answer-time.kql')
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
    name: 'renewal-heartbeat'
    title: 'Renewal sweeps and the earliest expiry they left (hours)'
    visualization: 'table'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/renewal-heartbeat.kql')
  }
  {
    name: 'poison-queues'
    title: 'Poison queue lengths'
    visualization: 'timechart'
    timeContext: { durationMs: 86400000 }
    query: loadTextContent('../queries/poison-queues.kql')
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
        json: '## Bookings appointment triggers\nFlows per mailbox, deliveries per flow, answer time to Graph, end-to-end latency, renewal heartbeat and earliest expiry, poison queues and dead letters. Alert rules use the same queries (infra/queries).'
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
