"""The business dropdown in a large tenant through two real hosts sharing one storage account.

Before the administrators index, one caller's 120 Graph calls a minute ran out at ~118 businesses (every
call then 429) and each host spent its own budget. Now the first call reads each staff list once into the
shared index, and the other host answers from it with the calls on the caller's behalf only.
"""

from __future__ import annotations

import httpx
import pytest

from testing.storage import clean_app_storage
from tests.conftest import QUEUE_CONSUMERS_OFF, sandbox_settings

ADMIN = "admin@contoso.test"
MANY = 150  # above the ~118 at which the old per-caller budget ran out
TIMERS_OFF = {f"AzureWebJobs.{name}.Disabled": "true"
              for name in ("refresh_directory", "resync_mailboxes", "renew_subscriptions", "sweep_outbox")}


def dropdown(host, token: str) -> httpx.Response:
    return httpx.get(f"{host.url}/api/v1/bookingBusinessesUserAsAdmin", timeout=60,
                     headers={"Authorization": f"Bearer {token}"})


def graph_calls(sandbox) -> tuple[int, int]:
    """(staff listings, other Graph and token calls) since the request log was last cleared."""
    paths = [r["path"].lower() for r in sandbox.requests() if not r["path"].startswith("/_sandbox")]
    staff = sum(1 for p in paths if p.endswith("/staffmembers"))
    return staff, len(paths) - staff


@pytest.mark.slow
def test_the_dropdown_at_many_businesses_is_complete_on_two_hosts(app_host_factory, sandbox, graph_env, azurite
                                                                   ) -> None:
    clean_app_storage(azurite.connection_string)
    clones = [f"branch-{i:04d}@contoso.test" for i in range(MANY)]
    for smtp in clones:  # clones of the clinic, administered by admin@contoso.test
        sandbox.control("POST", "/businesses", {"smtp": smtp})
    settings = {**sandbox_settings(sandbox), **QUEUE_CONSUMERS_OFF, **TIMERS_OFF}
    first_host, second_host = app_host_factory(**settings).start(), app_host_factory(**settings).start()
    token = sandbox.user_token(ADMIN)
    expected = sorted(["clinic@contoso.test", "salon@contoso.test", *clones])
    sandbox.control("DELETE", "/requests")

    first = dropdown(first_host, token)
    assert first.status_code == 200, first.text
    assert sorted(m["email"] for m in first.json()["mailboxes"]) == expected
    staff, others = graph_calls(sandbox)
    assert staff == MANY + 2 and others <= 5  # each staff list once; exchange, listing, /me (+ app tokens)
    sandbox.control("DELETE", "/requests")

    second = dropdown(second_host, token)
    assert second.status_code == 200, second.text
    assert sorted(m["email"] for m in second.json()["mailboxes"]) == expected
    staff, others = graph_calls(sandbox)
    assert staff == 0 and others <= 4  # the index is shared: nothing read again
