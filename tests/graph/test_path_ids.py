"""The Graph adapter's own guard for ids in URLs (defence in depth behind shared.endpoints.access): a dot segment
never becomes part of a Graph URL, where normalisation would make ``…/appointments/..`` the business itself, and
reserved characters are percent-encoded so an id stays one segment. Issue 25: ``…/appointments/%2E%2E`` fetched the
business and answered 200 with a made-up appointment."""

from __future__ import annotations

import pytest

from graph_sandbox.testing import SandboxServer
from shared.adapters.graph import Graph, GraphError
from shared.adapters.settings import Settings
from tests.graph.test_graph import CLINIC, sandbox, settings  # noqa: F401 (fixtures)


@pytest.mark.parametrize("appointment_id", [".", "..", "...", "a\x00b", "a\nb"])
async def test_a_dot_segment_or_control_character_never_reaches_graph(settings: Settings,  # noqa: F811
                                                                       sandbox: SandboxServer,  # noqa: F811
                                                                       appointment_id: str) -> None:
    graph = Graph(settings)
    for call in (graph.get_appointment(CLINIC, appointment_id),
                 graph.cancel_appointment(CLINIC, appointment_id, "no"), graph.get_event(CLINIC, appointment_id)):
        with pytest.raises(GraphError) as refused:
            await call
        assert (refused.value.status, refused.value.code) == (400, "ErrorInvalidIdMalformed")
    assert sandbox.requests() == []


@pytest.mark.parametrize(("appointment_id", "raw"), [("%2E%2E", "%252E%252E"), ("a/b", "a%2Fb"), ("a?b#c", "a%3Fb%23c"),
                                                     ("a\\b", "a%5Cb")])
async def test_reserved_characters_stay_inside_one_segment(settings: Settings, sandbox: SandboxServer,  # noqa: F811
                                                           appointment_id: str, raw: str) -> None:
    with pytest.raises(GraphError) as missing:
        await Graph(settings).get_appointment(CLINIC, appointment_id)
    # No such appointment (the sandbox, like many servers, decodes "%2F" before routing: 400), never the business.
    assert missing.value.status in (400, 404)
    [sent] = [r for r in sandbox.requests() if "/appointments" in r["path"]]
    assert sent["rawPath"].endswith(f"/appointments/{raw}")
