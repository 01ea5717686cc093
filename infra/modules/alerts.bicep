// Alert rules for admins, over the app's telemetry events (shared/contracts/events.py) in Application Insights.
// Queries live in infra/queries/*.kql; each rule counts the rows its query returns in its window.
// Two of them watch that the app is alive at all, whatever it logs: a standard availability test of the anonymous
// /api/health from five places with a metric alert on it (app-unavailable), and app-silent, no heartbeat of the
// app's own exporter for 15 minutes. No platform metric alert on the site: the app-level metrics Flex Consumption
// documents are its billing meters (OnDemandFunctionExecutionCount, ...Units, AlwaysReady...), with no failure
// dimension (learn.microsoft.com/azure/azure-functions/monitor-functions, "Analyze metrics"), and a host that cannot
// load the app runs no function to count. Every rule notifies the one action group, whose receivers are who gets
// the alert (learn.microsoft.com/azure/azure-monitor/alerts/action-groups); docs/operations.md is the runbook.

param namePrefix string
param location string
param tags object
param applicationInsightsId string
// The daily-cap-reached rule reads the workspace's own Operation log (_LogOperation), not Application Insights.
param workspaceId string
@description('Monthly cost budget of the resource group, in the billing currency; its notifications go to alertRecipients and the action group. 0: no budget.')
@minValue(0)
param monthlyBudget int = 0
// A budget counts from the first day of a month (learn.microsoft.com/azure/templates/microsoft.consumption/budgets,
// timePeriod.startDate): the month of the provision. Each provision moves it to its own month; whether Azure accepts a
// moved start date on an existing budget is not verified here (no Azure in tests): pass budgetStartDate to pin it.
param budgetStartDate string = '${utcNow('yyyy-MM')}-01T00:00:00Z'
// At least one: an action group without a receiver makes every alert silent (a deployment with none stops here).
@minLength(1)
@description('E-mail addresses that receive every alert.')
param alertRecipients array
@description('Failed delivery attempts in 15 minutes above which the delivery alert fires.')
param deliveryFailureThreshold int = 10
@description('The anonymous health route the availability test calls: 200 when the app and its dependencies answer, 503 when one does not.')
param healthUrl string
// Where the availability test runs from (population names of
// learn.microsoft.com/azure/azure-monitor/app/availability-standard-tests: East US, West Europe, Southeast Asia,
// West US, North Europe). Five, and the alert at five minus two failing, as that page recommends ("alert location
// threshold = number of test locations - 2, with a minimum of five test locations").
@minLength(5)
param availabilityTestLocations array = [
  'us-va-ash-azr'
  'emea-nl-ams-azr'
  'apac-sg-sin-azr'
  'us-ca-sjc-azr'
  'emea-gb-db3-azr'
]

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
    // The heartbeat: the queue-metrics timer records the poison queues' lengths every 5 minutes through the app's
    // own exporter. None for 15 minutes: the app did not start, its worker or timers stopped, or its exporter
    // cannot send; every other rule, counting what the app sends, would stay quiet then.
    name: 'app-silent'
    displayName: 'Bookings triggers: the app sent no telemetry for 15 minutes'
    description: 'No heartbeat from the app (poison_queue_length, recorded every 5 minutes by the queue-metrics timer) for 15 minutes: the app did not start (a setting refused at import), its worker or timers stopped, or its Application Insights exporter cannot send. Notifications, deliveries and renewals may be stopped. See docs/operations.md.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('../queries/alert-app-silent.kql')
  }
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
    name: 'delta-check-failing'
    displayName: 'Bookings triggers: the delta check of a mailbox keeps failing'
    description: 'For an hour every delta check of a mailbox failed (Graph refused or throttled it). Its changes are still notified, and it gets an hourly full resync instead, but a change Graph never notified can wait up to an hour instead of 5 minutes. See docs/operations.md.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-delta-check-failing.kql')
  }
  {
    name: 'notifications-missing'
    displayName: 'Bookings triggers: Graph change notifications not arriving'
    description: 'More than 10 times in an hour the delta check found appointment changes that no Graph notification announced. They were delivered, up to about 5 minutes late; if notifications stay away, every change waits for the delta check. See docs/operations.md.'
    severity: 3
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 10
    query: loadTextContent('../queries/alert-notifications-missing.kql')
  }
  {
    // A daily event: the window covers one day's check, so the alert resolves the day after a rotation.
    name: 'connector-secret-expiring'
    displayName: 'Bookings triggers: connector client secret expiring'
    description: 'The secret Power Automate signs users in to the connector with expires within 30 days (or has expired): then every connection fails to sign in. Rotate it with scripts/rotate-connector-secret.sh (infra/README.md, "Rotating the connector secret").'
    severity: 2
    frequency: 'PT1H'
    window: 'P1D'
    threshold: 0
    query: loadTextContent('../queries/alert-connector-secret-expiring.kql')
  }
  {
    // Microsoft's query for the event the workspace writes when its daily cap stops ingestion
    // (learn.microsoft.com/azure/azure-monitor/logs/daily-cap, "Alert when daily cap is reached"). It runs on the
    // workspace: that is where the Operation table is.
    name: 'daily-cap-reached'
    displayName: 'Bookings triggers: Log Analytics daily cap reached, telemetry stopped'
    description: 'The workspace reached its daily cap (dailyCapGb) and stopped collecting until its daily reset: every other alert over the app\'s telemetry is blind until then. Find what grew, then raise the cap or fix the cause. See docs/operations.md.'
    severity: 1
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: 0
    query: loadTextContent('../queries/alert-daily-cap-reached.kql')
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
  {
    // The export is what a restore brings back (docs/operations.md); its next instant rides on each export's event,
    // so the rule follows BACKUP_SCHEDULE without reading it.
    name: 'flow-export-missing'
    displayName: 'Bookings triggers: the flow export stopped'
    description: 'The scheduled export of the flow registrations (BACKUP_SCHEDULE) missed its next run by 2 hours, or none ran in 2 days while the app was up. A lost mailboxes table would lose the flows registered since the last export. See docs/operations.md.'
    severity: 2
    frequency: 'PT1H'
    window: 'P2D'
    threshold: 0
    query: loadTextContent('../queries/alert-flow-export-missing.kql')
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
      (rule.name == 'daily-cap-reached') ? workspaceId : applicationInsightsId
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

// Outside in: Application Insights calls /api/health every 5 minutes from each location (a failure counts once 3
// quick attempts failed: RetryEnabled). Standard tests are billed per execution (5 locations x 288 a day); each is
// one execution of the health function and one requests row. learn.microsoft.com/azure/azure-monitor/app/availability-standard-tests
resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: '${namePrefix}-health'
  location: location
  // The link that makes the portal show the test under its Application Insights resource.
  tags: union(tags, {
    'hidden-link:${applicationInsightsId}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: '${namePrefix}-health'
    Name: 'Bookings triggers: GET /api/health'
    Description: 'The app and its storage, queues and Graph endpoint answer (200); anything else, or no answer within 30 seconds, fails.'
    Enabled: true
    Frequency: 300
    Timeout: 30
    Kind: 'standard'
    RetryEnabled: true
    Locations: [for id in availabilityTestLocations: {
      Id: id
    }]
    Request: {
      RequestUrl: healthUrl
      HttpVerb: 'GET'
      ParseDependentRequests: false
      FollowRedirects: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

// Fires when 3 of the 5 locations fail (evaluated every minute over 5): within about 10 minutes of the app
// stopping answering. As the quickstart "Metric alert rule for an availability test" builds it
// (azure.microsoft.com/resources/templates/monitoring-webtest-metric-alert).
resource healthAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-app-unavailable'
  location: 'global'
  tags: union(tags, {
    'hidden-link:${applicationInsightsId}': 'Resource'
    'hidden-link:${healthTest.id}': 'Resource'
  })
  properties: {
    description: 'GET /api/health failed from at least 3 of 5 places: the app is stopped, does not start, or a dependency (storage, Graph) does not answer. Graph notifications and Power Automate calls fail meanwhile. See docs/operations.md.'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: applicationInsightsId
      failedLocationCount: length(availabilityTestLocations) - 2
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
output availabilityTestName string = healthTest.name
output availabilityAlertName string = healthAlert.name
output ruleNames array = [for rule in rules: '${namePrefix}-${rule.name}']

// Optional: a monthly cost budget over the resource group (every resource of this deployment). Notified at 80% of
// the amount spent and at 100% forecast, to the alert e-mail addresses and the action group
// (learn.microsoft.com/azure/cost-management-billing/costs/tutorial-acm-create-budgets). A budget alerts, it never
// stops anything; the workspace's daily cap is the only stop.
resource budget 'Microsoft.Consumption/budgets@2024-08-01' = if (monthlyBudget > 0) {
  name: '${namePrefix}-monthly'
  properties: {
    category: 'Cost'
    amount: monthlyBudget
    timeGrain: 'Monthly'
    timePeriod: {
      startDate: budgetStartDate
    }
    notifications: {
      actual80: {
        enabled: true
        operator: 'GreaterThanOrEqualTo'
        threshold: 80
        thresholdType: 'Actual'
        contactEmails: alertRecipients
        contactGroups: [
          actionGroup.id
        ]
      }
      forecast100: {
        enabled: true
        operator: 'GreaterThanOrEqualTo'
        threshold: 100
        thresholdType: 'Forecasted'
        contactEmails: alertRecipients
        contactGroups: [
          actionGroup.id
        ]
      }
    }
  }
}
