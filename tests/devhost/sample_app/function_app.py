"""A Functions app used only by the local host's tests: one function per behaviour under test.

Invocations are recorded as JSON lines in the file named by the RECORD_FILE setting, so tests can see
what ran, with which input, how many times.
"""

import asyncio
import json
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(**fields: object) -> None:
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"at": time.time(), **fields}) + "\n")


@app.route(route="items/{id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def item_by_number(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"kind": "number", "id": req.route_params["id"]}), mimetype="application/json")


@app.route(route="items/{name}", methods=["GET", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def item_by_name(req: func.HttpRequest) -> func.HttpResponse:  # sync on purpose: runs in a thread
    return func.HttpResponse(json.dumps({
        "kind": "name", "name": req.route_params["name"], "method": req.method, "query": dict(req.params),
        "header": req.headers.get("x-test"), "body": req.get_body().decode(),
    }), mimetype="application/json")


@app.route(route="items/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def item_special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("special")


@app.route(route="teapot", auth_level=func.AuthLevel.ANONYMOUS)
async def teapot(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("short and stout", status_code=418, headers={"x-kind": "teapot", "Location": "/x"},
                             mimetype="text/plain")


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@app.route(route="keyed", methods=["GET"])
async def keyed(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("function level")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
async def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin level")


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
async def tick(timer: func.TimerRequest) -> None:
    record(function="tick", past_due=timer.past_due)
    await asyncio.sleep(float(os.environ.get("TICK_SECONDS", "0")))


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
async def work(msg: func.QueueMessage, context: func.Context) -> None:
    body = msg.get_body().decode()
    record(function="work", body=body, dequeue_count=msg.dequeue_count, invocation=context.invocation_id)
    if body.startswith("fail"):
        raise ValueError(f"told to fail: {body}")
    if body.startswith("slow"):
        await asyncio.sleep(30)
    record(function="work-done", body=body)
