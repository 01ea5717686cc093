"""Wiring only: one small function per trigger, each delegating to a module of the ``shared`` package.

A standard Python v2 programming-model app: ``func start`` and Azure run it unchanged, and so does the
project's local host (``python -m devhost``). Importing it must stay cheap: no Graph SDK, and the storage
queue SDK, httpx and PyJWT only in a background thread once the functions are declared
(``shared.adapters.lazy_imports``).
HTTP functions live in ``shared.endpoints``, queue and timer functions in ``shared.workers``
(``docs/architecture.md`` has the map).
"""

import gc

import azure.functions as func

from shared.adapters.lazy_imports import warm_up
from shared.adapters.logs import configure_logging
from shared.adapters.monitoring import configure_monitoring_safely
from shared.adapters.settings import get_settings
from shared.adapters.storage import DELIVERIES_QUEUE, MAILBOX_CHANGES_QUEUE, SUBSCRIPTION_TASKS_QUEUE, poison_queue
from shared.endpoints import appointments as appointment_api
from shared.endpoints import backups as backup_api
from shared.endpoints import cancellation, health, test_events
from shared.endpoints import dead_letters as dead_letter_api
from shared.endpoints import flow_deliveries as flow_delivery_api
from shared.endpoints import flow_webhooks as webhook_api
from shared.endpoints import graph_lifecycle as lifecycle_api
from shared.endpoints import graph_notifications as notification_api
from shared.workers import (
    backup,
    credential_expiry,
    delivery,
    delta_check,
    directory_refresh,
    outbox_sweep,
    poison,
    queue_metrics,
    reconcile,
    reminders,
    renewal,
    resync,
)

# Read every setting now: a bad one stops the app at start-up with a message naming it.
settings = get_settings()
configure_logging(settings.log_level)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health_check(req: func.HttpRequest) -> func.HttpResponse:
    return await health.handle(req)


# The same checks with their detail texts and durations: for operators, behind a function key.
@app.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health_details(req: func.HttpRequest) -> func.HttpResponse:
    return await health.handle_details(req)


# The connector's API: anonymous at the Functions level, every call authenticated by its Entra bearer token
# in shared.adapters.auth (Power Automate signs in with the user's token, not a function key).
@app.route(route=webhook_api.WEBHOOK_ROUTE, methods=["POST", "DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
async def flow_webhook(req: func.HttpRequest) -> func.HttpResponse:
    return await webhook_api.webhook(req)


@app.route(route=webhook_api.WEBHOOKS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def flow_webhooks(req: func.HttpRequest) -> func.HttpResponse:
    return await webhook_api.list_webhooks(req)


@app.route(route=webhook_api.BUSINESSES_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def businesses_as_admin(req: func.HttpRequest) -> func.HttpResponse:
    return await webhook_api.businesses_as_admin(req)


@app.route(route=test_events.ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def test_event(req: func.HttpRequest) -> func.HttpResponse:
    return await test_events.handle(req)


# Graph cannot sign in: anonymous, authenticated per item by the subscription's clientState.
@app.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return await notification_api.handle(req)


@app.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await lifecycle_api.handle(req)


@app.route(route=cancellation.ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def cancel_appointment(req: func.HttpRequest) -> func.HttpResponse:
    return await cancellation.handle(req)


# The connector's actions: appointments, services and staff of a business (Bookings roles decide who may).
@app.route(route=appointment_api.APPOINTMENTS_ROUTE, methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def appointments(req: func.HttpRequest) -> func.HttpResponse:
    return await appointment_api.appointments(req)


@app.route(route=appointment_api.APPOINTMENT_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def appointment(req: func.HttpRequest) -> func.HttpResponse:
    return await appointment_api.get_appointment(req)


@app.route(route=appointment_api.BUSINESSES_AS_STAFF_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def businesses_as_staff(req: func.HttpRequest) -> func.HttpResponse:
    return await appointment_api.businesses_as_staff(req)


@app.route(route=appointment_api.SERVICES_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def services(req: func.HttpRequest) -> func.HttpResponse:
    return await appointment_api.list_services(req)


@app.route(route=appointment_api.STAFF_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def staff_members(req: func.HttpRequest) -> func.HttpResponse:
    return await appointment_api.list_staff(req)


@app.route(route=dead_letter_api.DEADLETTERS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    return await dead_letter_api.list_dead_letters(req)


@app.route(route=dead_letter_api.DEADLETTER_REPLAY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letter_replay(req: func.HttpRequest) -> func.HttpResponse:
    return await dead_letter_api.replay_dead_letter(req)


@app.route(route=dead_letter_api.DEADLETTERS_REPLAY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letters_replay(req: func.HttpRequest) -> func.HttpResponse:
    return await dead_letter_api.replay_dead_letters(req)



# A flow's deliveries, for its creator and the business's administrators (the connector's actions).
@app.route(route=flow_delivery_api.DELIVERIES_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def flow_deliveries(req: func.HttpRequest) -> func.HttpResponse:
    return await flow_delivery_api.list_deliveries(req)


@app.route(route=flow_delivery_api.REPLAY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def flow_dead_letters_replay(req: func.HttpRequest) -> func.HttpResponse:
    return await flow_delivery_api.replay_dead_letters(req)

# Operators only (the master key): the flow exports, and restoring one (scripts/restore-flows.sh).
@app.route(route=backup_api.EXPORTS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ADMIN)
async def flow_exports(req: func.HttpRequest) -> func.HttpResponse:
    return await backup_api.list_exports(req)


@app.route(route=backup_api.RESTORE_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ADMIN)
async def restore_flows(req: func.HttpRequest) -> func.HttpResponse:
    return await backup_api.restore(req)


@app.queue_trigger(arg_name="msg", queue_name=MAILBOX_CHANGES_QUEUE, connection="AzureWebJobsStorage")
async def reconcile_mailbox(msg: func.QueueMessage) -> None:
    await reconcile.handle_message(msg)


@app.queue_trigger(arg_name="msg", queue_name=DELIVERIES_QUEUE, connection="AzureWebJobsStorage")
async def deliveries(msg: func.QueueMessage) -> None:
    await delivery.deliver(msg)


# The runtime moves a delivery that failed maxDequeueCount times here; it becomes a dead letter.
@app.queue_trigger(arg_name="msg", queue_name=poison_queue(DELIVERIES_QUEUE), connection="AzureWebJobsStorage")
async def deliveries_poison(msg: func.QueueMessage) -> None:
    await delivery.handle_poison(msg)


@app.queue_trigger(arg_name="msg", queue_name=SUBSCRIPTION_TASKS_QUEUE, connection="AzureWebJobsStorage")
async def subscription_tasks(msg: func.QueueMessage) -> None:
    await renewal.handle_message(msg)


# Hints and tasks that failed maxDequeueCount times: back after a back-off (a hint as a full resync), bounded.
@app.queue_trigger(arg_name="msg", queue_name=poison_queue(MAILBOX_CHANGES_QUEUE), connection="AzureWebJobsStorage")
async def mailbox_changes_poison(msg: func.QueueMessage) -> None:
    await poison.handle_mailbox_changes_poison(msg)


@app.queue_trigger(arg_name="msg", queue_name=poison_queue(SUBSCRIPTION_TASKS_QUEUE),
                   connection="AzureWebJobsStorage")
async def subscription_tasks_poison(msg: func.QueueMessage) -> None:
    await poison.handle_subscription_tasks_poison(msg)


@app.timer_trigger(schedule="%OUTBOX_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def sweep_outbox(timer: func.TimerRequest) -> None:
    await outbox_sweep.sweep_outbox()


# The time-relative triggers (about to start, has ended): what is due until the next run, each at its instant.
@app.timer_trigger(schedule="%REMINDER_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def fire_reminders(timer: func.TimerRequest) -> None:
    await reminders.run()


@app.timer_trigger(schedule="%RESYNC_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def resync_mailboxes(timer: func.TimerRequest) -> None:
    await resync.resync_all()


@app.timer_trigger(schedule="%DELTA_CHECK_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def check_calendar_changes(timer: func.TimerRequest) -> None:
    await delta_check.check_all()


@app.timer_trigger(schedule="%RENEWAL_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def renew_subscriptions(timer: func.TimerRequest) -> None:
    await renewal.sweep()


# The poison queues' lengths as a metric (their alert: a consumer that stopped emptying one).
@app.timer_trigger(schedule="%QUEUE_METRICS_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def measure_queues(timer: func.TimerRequest) -> None:
    await queue_metrics.measure_poison_queues()


# Every business's administrators, re-read for the connector's business dropdown (shared.records.business_admins).
@app.timer_trigger(schedule="%DIRECTORY_REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def refresh_directory(timer: func.TimerRequest) -> None:
    await directory_refresh.refresh_administrators()


# Daily: the connector secret's recorded expiry, warned of from 30 days before (connector-secret-expiring alert).
@app.timer_trigger(schedule="0 0 7 * * *", arg_name="timer", run_on_startup=False)
async def check_credential_expiry(timer: func.TimerRequest) -> None:
    await credential_expiry.check_connector_secret()
# Every flow registration to a new blob of the flow-backups container, daily by default (what a restore reads).
@app.timer_trigger(schedule="%BACKUP_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def export_flows(timer: func.TimerRequest) -> None:
    await backup.export_flows()


# What importing the app created (the Azure SDKs and everything else above: ~80,000 objects) lives as
# long as the process. Frozen, it is left out of full garbage collections, which otherwise took ~40-50 ms
# each and paused every request in flight (measured: every other notification burst was 50 ms slower).
gc.freeze()
# The SDKs the first requests need, imported while the host finishes starting, then the Application Insights
# exporter (a no-op unless APPLICATIONINSIGHTS_CONNECTION_STRING is set); what they create is frozen too.
warm_up(then=lambda: (configure_monitoring_safely(settings), gc.freeze()))
