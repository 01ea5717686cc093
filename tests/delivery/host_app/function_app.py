"""The delivery functions alone, wired exactly as the project's function_app.py wires them, so the
local host can run them in tests before (and independently of) the full app."""

import azure.functions as func

from shared import deadletter_api, delivery, store
from shared.settings import get_settings
from shared.telemetry import configure_logging
from shared.web import new_correlation_id

configure_logging(get_settings().log_level)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.queue_trigger(arg_name="msg", queue_name=store.DELIVERIES_QUEUE, connection="AzureWebJobsStorage")
async def deliveries(msg: func.QueueMessage) -> None:
    await delivery.deliver(msg)


@app.queue_trigger(arg_name="msg", queue_name=store.poison_queue(store.DELIVERIES_QUEUE),
                   connection="AzureWebJobsStorage")
async def deliveries_poison(msg: func.QueueMessage) -> None:
    await delivery.handle_poison(msg)


@app.timer_trigger(schedule="%OUTBOX_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def sweep_outbox(timer: func.TimerRequest) -> None:
    await delivery.sweep_outbox(correlation_id=new_correlation_id())


@app.route(route=deadletter_api.DEADLETTERS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    return await deadletter_api.list_dead_letters(req)


@app.route(route=deadletter_api.DEADLETTER_REPLAY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letter_replay(req: func.HttpRequest) -> func.HttpResponse:
    return await deadletter_api.replay_dead_letter(req)


@app.route(route=deadletter_api.DEADLETTERS_REPLAY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def dead_letters_replay(req: func.HttpRequest) -> func.HttpResponse:
    return await deadletter_api.replay_dead_letters(req)
