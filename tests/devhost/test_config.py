"""host.json reading: the runtime's defaults, TimeSpans, and app settings that override host.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.config import HostConfig


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps(data))
    return path


def test_defaults_when_host_json_is_silent(tmp_path: Path) -> None:
    config = HostConfig.load(write(tmp_path, {"version": "2.0"}), environ={})
    assert (config.route_prefix, config.queues.batch_size, config.queues.threshold) == ("api", 16, 8)
    assert config.queues.max_dequeue_count == 5 and config.function_timeout is None


def test_app_settings_override_host_json_as_on_azure(tmp_path: Path) -> None:
    path = write(tmp_path, {"functionTimeout": "00:10:00",
                            "extensions": {"queues": {"maxDequeueCount": 5, "visibilityTimeout": "00:00:10"}}})
    config = HostConfig.load(path, environ={
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
        "azurefunctionsjobhost__Extensions__Queues__VisibilityTimeout": "00:00:00",  # names match without case
        "AzureFunctionsJobHost__extensions__http__routePrefix": "x",  # a section host.json does not have
        "AzureFunctionsJobHost__functionTimeout": "00:01:00",
        "UNRELATED": "1"})
    assert config.queues.max_dequeue_count == 2
    assert config.queues.visibility_timeout == 0
    assert config.route_prefix == "x"
    assert config.function_timeout == 60
    assert json.loads(path.read_text())["extensions"]["queues"]["maxDequeueCount"] == 5  # the file is untouched


def test_a_bad_override_is_reported_like_a_bad_host_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="maxPollingInterval"):
        HostConfig.load(write(tmp_path, {}), environ={
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "soon"})
