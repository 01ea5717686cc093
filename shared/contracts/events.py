"""The telemetry events the app emits: their names and the custom dimensions each one carries.

This module is the contract between the app and what admins see in Application Insights: the alert
rules, the workbook and the queries in ``infra/queries/*.kql`` filter ``customEvents`` by these names and
read these dimensions. Renaming an event or a dimension here without changing the KQL breaks the
dashboards silently; ``tests/infra`` checks that every event name and dimension the KQL uses is defined
here.

Emit an event with ``shared.adapters.monitoring.track_event(NAME, mailbox=..., ...)``. Locally it is a log line;
on Azure it becomes a row of ``customEvents`` with the dimensions under ``customDimensions``.

Dimension rules (enforced by ``track_event``): only the dimensions listed for the event; values are
strings or numbers; never a callback URL, a token, a client state or a message body. Mailboxes are the
lower-cased SMTP address of the Bookings business (the table partition key), which admins need to act.
"""

from __future__ import annotations

from types import MappingProxyType

# --- dimensions ------------------------------------------------------------------------------------
# Common to most events.
MAILBOX = "mailbox"  # Bookings business SMTP address, lower-cased
FLOW_ID = "flowId"  # webhook id returned to Power Automate at registration
SUBSCRIPTION_ID = "subscriptionId"  # Graph subscription id
TRIGGER = "trigger"  # AppointmentCreated | AppointmentUpdated | AppointmentDeleted
CORRELATION_ID = "correlationId"  # also in error bodies and log lines of the same request / message

# Event-specific.
FLOW_COUNT = "flowCount"  # flows registered on the mailbox after the change
MAX_FLOWS = "maxFlows"  # MAX_FLOWS_PER_MAILBOX in force
ERROR_CODE = "errorCode"  # our stable error code (shared/contracts/errors.py) or Graph's error code
STATUS = "status"  # HTTP status answered or received (int)
REASON = "reason"  # short machine word: deleted | gone | expired | ...
EVENT_ID = "eventId"  # stable id of one appointment change (the delivery idempotency key)
APPOINTMENT_ID = "appointmentId"  # Bookings appointment id
CHANGE_TYPE = "changeType"  # Created | Updated | Cancelled
ATTEMPT = "attempt"  # 1-based delivery / renewal attempt
WILL_RETRY = "willRetry"  # "true" | "false"
DURATION_MS = "durationMs"  # time spent in this step
EXPIRES_AT = "expiresAt"  # subscription expiration, ISO 8601 UTC
CONSECUTIVE_FAILURES = "consecutiveFailures"
LIFECYCLE_EVENT = "lifecycleEvent"  # reauthorizationRequired | subscriptionRemoved | missed
ITEM_COUNT = "itemCount"  # changes in one stored hint message
REQUEST_COUNT = "requestCount"  # Graph POSTs whose hints one stored message carries
DROPPED_COUNT = "droppedCount"  # of which dropped (clientState mismatch, unknown subscription)
FULL_RESYNC = "fullResync"  # "true" | "false"
REPLAYED_COUNT = "replayedCount"
QUEUE = "queue"  # a queue's name, e.g. mailbox-changes-poison
EARLIEST_EXPIRES_AT = "earliestExpiresAt"  # the soonest expiry of a live subscription, ISO 8601 UTC ("" if none)
SUBSCRIPTION_COUNT = "subscriptionCount"  # live subscriptions (mailboxes with flows)
RENEWAL_COUNT = "renewalCount"
REPAIR_COUNT = "repairCount"
DELETED_COUNT = "deletedCount"
MISSING_COUNT = "missingCount"  # subscriptions of the rows that Graph's list lacked (removed without a word)
ROUTE = "route"  # an HTTP answer's request name: "<METHOD> /api/<route template>", as the requests row's name
DAYS_LEFT = "daysLeft"  # whole days until a credential expires (negative: expired that many days ago)
EXPORT = "export"  # a flow export's blob name in the flow-backups container
NEXT_EXPORT_AT = "nextExportAt"  # BACKUP_SCHEDULE's next instant after an export, ISO 8601 UTC
MAILBOX_COUNT = "mailboxCount"

# --- events ----------------------------------------------------------------------------------------
# Registrations (the connector's webhook API).
FLOW_REGISTERED = "FlowRegistered"
FLOW_UNREGISTERED = "FlowUnregistered"
FLOW_REGISTRATION_REJECTED = "FlowRegistrationRejected"
# Graph subscriptions.
SUBSCRIPTION_CREATED = "SubscriptionCreated"
SUBSCRIPTION_RENEWED = "SubscriptionRenewed"
SUBSCRIPTION_RENEWAL_FAILED = "SubscriptionRenewalFailed"
SUBSCRIPTION_DELETED = "SubscriptionDeleted"
SUBSCRIPTION_LIFECYCLE = "SubscriptionLifecycleEvent"
NOTIFICATIONS_RECEIVED = "GraphNotificationsReceived"
# Change detection.
APPOINTMENT_NOT_STORED = "AppointmentNotStored"
CHANGE_NOT_NOTIFIED = "ChangeNotNotified"
DELTA_CHECK_FAILING = "DeltaCheckFailing"
# Delivery to flows.
DELIVERY_FAILED = "DeliveryFailed"
DELIVERY_DEAD_LETTERED = "DeliveryDeadLettered"
DEAD_LETTERS_REPLAYED = "DeadLettersReplayed"
# Poison queues.
QUEUE_MESSAGE_POISONED = "QueueMessagePoisoned"
# The renewal sweep's heartbeat.
RENEWAL_SWEEP_COMPLETED = "RenewalSweepCompleted"
# HTTP answers that failed (the requests row may be sampled out; this event never is).
REQUEST_FAILED = "RequestFailed"
# Credentials that expire.
CONNECTOR_SECRET_EXPIRING = "ConnectorSecretExpiring"  # noqa: S105 (an event name)
# The daily flow export.
FLOWS_EXPORTED = "FlowsExported"

_COMMON = (MAILBOX, CORRELATION_ID)

#: Every event and the dimensions it may carry. ``track_event`` drops anything else.
EVENTS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    # A flow saved in Power Automate registered a trigger. flowCount/maxFlows feed "flows per mailbox".
    FLOW_REGISTERED: (*_COMMON, FLOW_ID, TRIGGER, FLOW_COUNT, MAX_FLOWS),
    # A flow's trigger was removed: reason "deleted" (Power Automate's DELETE) or "gone" (404/410 on delivery).
    FLOW_UNREGISTERED: (*_COMMON, FLOW_ID, TRIGGER, FLOW_COUNT, MAX_FLOWS, REASON),
    # A registration answered 4xx/5xx: errorCode is the code in the error body (e.g. FlowLimitReached).
    FLOW_REGISTRATION_REJECTED: (*_COMMON, TRIGGER, ERROR_CODE, STATUS),
    SUBSCRIPTION_CREATED: (*_COMMON, SUBSCRIPTION_ID, EXPIRES_AT),
    SUBSCRIPTION_RENEWED: (*_COMMON, SUBSCRIPTION_ID, EXPIRES_AT, ATTEMPT),
    # Error level. consecutiveFailures grows until a renewal succeeds; expiresAt is the current expiry.
    SUBSCRIPTION_RENEWAL_FAILED: (*_COMMON, SUBSCRIPTION_ID, EXPIRES_AT, STATUS, ERROR_CODE, CONSECUTIVE_FAILURES),
    # reason: lastFlowRemoved | replaced | expired
    SUBSCRIPTION_DELETED: (*_COMMON, SUBSCRIPTION_ID, REASON),
    SUBSCRIPTION_LIFECYCLE: (*_COMMON, SUBSCRIPTION_ID, LIFECYCLE_EVENT),
    # One per stored hint message and mailbox: itemCount changes from requestCount Graph POSTs (concurrent
    # POSTs share a message). A POST with dropped items (unknown subscription, wrong clientState) also emits
    # one without mailbox, with droppedCount.
    NOTIFICATIONS_RECEIVED: (*_COMMON, SUBSCRIPTION_ID, ITEM_COUNT, REQUEST_COUNT, DROPPED_COUNT),
    # Error level. Storage refused an appointment's rows (status, its errorCode); the mailbox's other changes
    # were stored, this one is tried again by every reconcile until storage takes it.
    APPOINTMENT_NOT_STORED: (*_COMMON, APPOINTMENT_ID, ERROR_CODE, STATUS),
    # Warning level. The delta check found changes no notification announced within Graph's 3-minute maximum latency
    # (itemCount: the events they made); they were delivered, minutes late. The mailbox's subscription is renewed at
    # once (a 404 re-creates it). The notifications-missing alert counts these.
    CHANGE_NOT_NOTIFIED: (*_COMMON, ITEM_COUNT),
    # Error level. The delta check of a mailbox failed consecutiveFailures times in a row (status: Graph's, 0 when
    # Graph was not reached); every 15 (an hour) this event and a full resync of the mailbox. The
    # delta-check-failing alert. shared/workers/delta_check.py.
    DELTA_CHECK_FAILING: (*_COMMON, CONSECUTIVE_FAILURES, STATUS),
    # One failed attempt (429/5xx/timeout: willRetry=true; other 4xx: false, followed by DeliveryDeadLettered).
    DELIVERY_FAILED: (*_COMMON, FLOW_ID, TRIGGER, EVENT_ID, ATTEMPT, STATUS, ERROR_CODE, WILL_RETRY),
    # The delivery gave up (retries exhausted, non-retryable answer, or poison message): a dead-letter row exists.
    DELIVERY_DEAD_LETTERED: (*_COMMON, FLOW_ID, TRIGGER, EVENT_ID, ATTEMPT, STATUS, ERROR_CODE),
    DEAD_LETTERS_REPLAYED: (*_COMMON, FLOW_ID, REPLAYED_COUNT),
    # A message of mailbox-changes or subscription-tasks failed maxDequeueCount times (queue: the poison queue).
    # attempt: how often it was poisoned; reason: resync | retry (willRetry=true, after a back-off) | gaveUp |
    # malformed (dropped). shared/workers/poison.py.
    QUEUE_MESSAGE_POISONED: (*_COMMON, QUEUE, ATTEMPT, WILL_RETRY, REASON),
    # Every renewal sweep (RENEWAL_SCHEDULE), even one with nothing to do: what it enqueued (renewalCount,
    # repairCount), the orphans it deleted (deletedCount), and the soonest expiry it left behind
    # (earliestExpiresAt, with that subscription's mailbox and subscriptionId). The renewal-heartbeat alert fires
    # when none came for 2 hours or earliestExpiresAt is under 6 hours away. mailbox: the earliest's.
    RENEWAL_SWEEP_COMPLETED: (*_COMMON, SUBSCRIPTION_ID, EARLIEST_EXPIRES_AT, SUBSCRIPTION_COUNT, RENEWAL_COUNT,
                              REPAIR_COUNT, DELETED_COUNT, MISSING_COUNT, DURATION_MS),
    # Error level. The app answered 5xx (route: the requests row's name, status: the status answered; durationMs).
    # Emitted inside the request's span: same operation_Id as its requests row, when that row is sampled in.
    # The notification-5xx alert counts these. shared/adapters/monitoring.py request_span.
    REQUEST_FAILED: (*_COMMON, ROUTE, STATUS, DURATION_MS),
    # Warning level, daily from 30 days before the connector client's secret expires (CONNECTOR_CREDENTIAL_EXPIRES_AT),
    # error level once expired: every Power Automate connection then fails to sign in. expiresAt: that time;
    # daysLeft: whole days to it. shared/workers/credential_expiry.py; the connector-secret-expiring alert.
    CONNECTOR_SECRET_EXPIRING: (CORRELATION_ID, EXPIRES_AT, DAYS_LEFT),
    # Every flow export (BACKUP_SCHEDULE, daily): its blob, and every flow (flowCount, of all mailboxes) and mailbox
    # it holds. None for a day means exports are failing: restores would start from an older one.
    FLOWS_EXPORTED: (CORRELATION_ID, EXPORT, FLOW_COUNT, MAILBOX_COUNT, DURATION_MS, NEXT_EXPORT_AT),
})

# --- metrics (customMetrics rows: name, value, customDimensions) ------------------------------------
# Length of each poison queue (approximate message count, as storage reports it), measured by the
# queue-metrics timer (QUEUE_METRICS_SCHEDULE), one row per queue and measurement. The poison-queue-length alert
# fires when one stays above 0; the app-silent alert when none came for 15 minutes (the app's heartbeat).
# (OpenTelemetry instrument names are case-insensitive and the SDK lower-cases them: the row's name is this.)
POISON_QUEUE_LENGTH = "poison_queue_length"
# Successes are counted, not logged one row each: a histogram per series, which the exporter pre-aggregates into
# one customMetrics row per series and export interval (60 s): valueCount (how many), valueSum, valueMin,
# valueMax. Failures and state changes stay events (DeliveryFailed, DeliveryDeadLettered, FlowRegistered, ...).
# A flow answered 2xx: one measurement per delivery, of endToEndMs (change detected -> flow's 2xx; the attempt's
# own durationMs when the detection time is unknown). One series per flow (mailbox, flowId, trigger).
DELIVERY_SUCCEEDED_MS = "delivery_succeeded_ms"
# A mailbox was reconciled (a hint or the periodic resync): one measurement per reconcile, of its durationMs.
# One series per mailbox and kind (fullResync "true" | "false").
MAILBOX_RECONCILED_MS = "mailbox_reconciled_ms"

#: Every metric and the dimensions it may carry.
METRICS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    POISON_QUEUE_LENGTH: (QUEUE,),
    DELIVERY_SUCCEEDED_MS: (MAILBOX, FLOW_ID, TRIGGER),
    MAILBOX_RECONCILED_MS: (MAILBOX, FULL_RESYNC),
})
#: The metrics of ``METRICS`` that are histograms (``monitoring.record_histogram``); the others are gauges.
HISTOGRAMS: frozenset[str] = frozenset({DELIVERY_SUCCEEDED_MS, MAILBOX_RECONCILED_MS})

# --- HTTP answers (requests rows) ------------------------------------------------------------------
# Every HTTP answer of the app is a request span: a requests row named "<METHOD> /api/<route template>" with
# resultCode (the status answered), duration (ms), success (status < 400), url (scheme, host and path only:
# never a query string, which can hold a validation token or a function key) and customDimensions.correlationId
# (the answer's x-correlation-id). Events and log lines emitted while it is answered carry its operation_Id.
# The notification-5xx alert and the answer-time tile read them.
REQUEST_ROUTE = "http.route"

#: Dimensions that must never be emitted, whatever an event declares.
FORBIDDEN_DIMENSIONS: frozenset[str] = frozenset({
    "notificationUrl", "callbackUrl", "url", "token", "accessToken", "authorization", "clientState",
    "clientSecret", "body", "payload",
})
