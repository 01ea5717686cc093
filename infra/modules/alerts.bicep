// Alert rules for admins, over the app's telemetry events (shared/contracts/events.py) in Application Insights.
// Queries live in infra/queries/*.kql; each rule counts the rows its query returns in its window.

param namePrefix string
param location string
param tags object
param applicationInsightsId string
// At least one: an action group without a receiver makes every alert silent (a deployment with none stops here).
@minLength(1)
@description('E-mail addresses that receive every alert.')
param alertRecipients array
@description('Failed delivery attempts in 15 minutes above which the delivery alert fires.')
param deliveryFailureThreshold int = 10

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-admins'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'bookingtrig'
    enabled: true
    // Declared state: receivers added in the portal are replaced at the next provision; list them in ALERT_EMAIL.
    emailReceivers: [for (address, i) in alertRecipients: {
      name: 'admins-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var rules = [
  {
    name: 'delivery-failures'
    displayName: 'Bookings triggers: deliveries to flows failing'
    description: 'More failed delivery attempts than the threshold in 15 minutes. Flows may be missing appointment events; see the workbook and DeliveryFailed events.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    threshold: deliveryFailureThreshold
    query: loadTextContent('../queries/alert-delivery-failures.kql')
  }
  {
    name: 'dead-letters'
    displayName: 'Bookings triggers: dead letters growing'
    description: 'Deliveries gave up and left dead letters. Fix the cause, then replay them through the dead-letter API.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-dead-letters.kql')
  }
  {
    name: 'subscription-renewal-failed'
    displayName: 'Bookings triggers: Graph subscription failing to renew'
    description: 'A Graph subscription could not be renewed. Once it expires the mailbox flows stop receiving changes. Check Graph permissions and throttling.'
    severity: 1
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-subscription-renewal-failed.kql')
  }
  {
    // A heartbeat, not the last renewal: a subscription lives 70.25 hours, longer than a log alert looks back.
    name: 'renewal-heartbeat'
    displayName: 'Bookings triggers: renewal sweep silent or subscription expiring'
    description: 'No renewal sweep reported for 2 hours (the timer stopped or the app is down), or the latest sweep left a Graph subscription expiring within 6 hours although renewals start 24 hours before. Once a subscription expires its mailbox\'s flows stop receiving changes.'
    severity: 1
    frequency: 'PT15M'
    window: 'P1D'
    threshold: 0
    query: loadTextContent('../queries/alert-renewal-heartbeat.kql')
  }
  {
    name: 'poison-queue-length'
    displayName: 'Bookings triggers: a poison queue is not emptied'
    description: 'A poison queue held messages at every measurement for 30 minutes: its consumer fails or is switched off. Hints and tasks there wait for a retry that does not come; deliveries there have not become dead letters yet.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT30M'
    threshold: 0
    query: loadTextContent('../queries/alert-poison-queue-length.kql')
  }
  {
    name: 'poisoned-messages'
    displayName: 'Bookings triggers: change hints or subscription tasks poisoned'
    description: 'A mailbox-changes or subscription-tasks message failed every time it was offered. It is retried after a back-off (a hint as a full resync) and given up after 5 poisonings; the errors of its correlation id say why.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-poisoned-messages.kql')
  }
  {
    name: 'appointments-not-stored'
    displayName: 'Bookings triggers: an appointment could not be stored'
    description: 'Table storage refused the rows of an appointment; the mailbox\'s other changes are stored, this one is tried again by every reconcile and its flows get no event until then. The error log of the correlation id names it.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-appointments-not-stored.kql')
  }
  {
    name: 'notification-5xx'
    displayName: 'Bookings triggers: Graph notifications answered 5xx'
    description: 'The notification or lifecycle endpoint could not persist what Graph sent. Graph retries for up to 4 hours; check storage.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('../queries/alert-notification-5xx.kql')
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    scopes: [
      applicationInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
output ruleNames array = [for rule in rules: '${namePrefix}-${rule.name}']
