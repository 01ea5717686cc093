"""Network isolation turned on for a running deployment never cuts the app off from its storage.

ARM runs each module of infra/main.bicep as a deployment of its own, after every deployment it depends on
(explicitly with dependsOn, or implicitly by reading another module's outputs) has finished, and a module has
finished only when every resource in it has. So the order in which the storage account's network rules change is
the dependency graph of main.bicep's modules, built here from the parsed Bicep (pycep-parser), with each module's
parameters evaluated for the deployment at hand (tests/infra/bicep_eval.py).

The property: when `networkIsolation` goes from false to true, every deployment of modules/storage.bicep that
makes the account refuse public traffic comes after the deployment that integrates the Function App with the
subnet (Microsoft.Web/sites virtualNetworkSubnetId) and after the one that creates the storage's private
endpoints, their DNS zone groups and the zones' links to the network; and the storage the app depends on while it
is not yet integrated is still public.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.bicep_eval import evaluate
from tests.infra.conftest import INFRA, body, parse, resources

STORAGE = "modules/storage.bicep"
PLACEHOLDER_OUTPUTS = {"appSubnetId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/"
                                      "virtualNetworks/v/subnets/app"}

# A deployment that turns isolation on for an app that runs today; a later provision with it on; and off.
TURNING_ON = {"networkIsolation": True, "storageAlreadyPrivate": False}
STAYING_ON = {"networkIsolation": True, "storageAlreadyPrivate": True}
OFF = {"networkIsolation": False, "storageAlreadyPrivate": False}


def _modules(main: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return main["modules"]


def _config(module: dict[str, Any]) -> dict[str, Any]:
    config = module["config"]
    return config["config"] if "condition" in config and "config" in config else config


def _deployed(module: dict[str, Any], scope: dict[str, Any]) -> bool:
    config = module["config"]
    return "condition" not in config or bool(evaluate(config["condition"], scope))


def _referenced(node: Any, names: set[str]) -> set[str]:
    """Module names ``node`` reads outputs of (an implicit dependency in ARM)."""
    found: set[str] = set()
    if isinstance(node, dict):
        operands = node.get("operator", {}).get("operands", {}) if "operator" in node else {}
        if node.get("operator", {}).get("type") == "property_accessor" and operands.get("operand_1") in names:
            found.add(operands["operand_1"])
        for value in node.values():
            found |= _referenced(value, names)
    elif isinstance(node, list):
        for value in node:
            found |= _referenced(value, names)
    elif isinstance(node, str):
        found |= {name for name in re.findall(r"\b(\w+)\.outputs\b", node) if name in names}
    return found


def dependency_graph(main: dict[str, Any]) -> dict[str, set[str]]:
    """Module -> the modules it waits for directly (dependsOn and outputs it reads)."""
    names = set(_modules(main))
    graph = {}
    for name, module in _modules(main).items():
        config = _config(module)
        explicit = {d for d in config.get("dependsOn") or [] if d in names}
        graph[name] = explicit | _referenced(config.get("params", {}), names) - {name}
    return graph


def _after(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every module ``name`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(graph[name])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(graph[current])
    return seen


def _scope(main: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    scope = {name: {"outputs": PLACEHOLDER_OUTPUTS} for name in _modules(main)}
    return {**scope, **values}


def _storage_deployments(main: dict[str, Any], values: dict[str, Any]) -> dict[str, bool]:
    """Each deployed module of storage.bicep in this deployment -> whether it makes the account private."""
    scope = _scope(main, values)
    return {name: bool(evaluate(_config(module)["params"]["privateOnly"], scope))
            for name, module in _modules(main).items()
            if module["detail"]["path"] == STORAGE and _deployed(module, scope)}


def _integrating(main: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """Deployed modules that set a Function App's virtualNetworkSubnetId to a subnet in this deployment."""
    scope, found = _scope(main, values), []
    for name, module in _modules(main).items():
        doc = parse(module["detail"]["path"])
        sites = resources(doc, "Microsoft.Web/sites")
        if not _deployed(module, scope) or not any("virtualNetworkSubnetId" in s["properties"] for s in sites.values()):
            continue
        subnet = evaluate(_config(module)["params"].get("virtualNetworkSubnetId", ""), scope)
        if subnet:
            found.append(name)
    return found


def _private_endpoints(main: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """Deployed modules that create private endpoints with DNS zone groups and the zones' network links."""
    scope, found = _scope(main, values), []
    for name, module in _modules(main).items():
        doc = parse(module["detail"]["path"])
        if _deployed(module, scope) and all(resources(doc, kind) for kind in (
                "Microsoft.Network/privateEndpoints", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
                "Microsoft.Network/privateDnsZones/virtualNetworkLinks")):
            found.append(name)
    return found


def test_turning_isolation_on_makes_storage_private_only_once_the_app_is_integrated(
        main_bicep: dict[str, Any]) -> None:
    graph = dependency_graph(main_bicep)
    storage = _storage_deployments(main_bicep, TURNING_ON)
    (integration,) = _integrating(main_bicep, TURNING_ON)
    (endpoints,) = _private_endpoints(main_bicep, TURNING_ON)
    private = [name for name, makes_private in storage.items() if makes_private]
    assert private, "with networkIsolation on, some deployment must make the storage account private"
    for name in private:
        waits_for = _after(graph, name)
        assert integration in waits_for, f"{name} makes storage private before {integration} integrates the app"
        assert endpoints in waits_for, f"{name} makes storage private before {endpoints} creates its private endpoints"
    # What the app runs against until it is integrated: storage still reachable publicly.
    for name in _after(graph, integration) & set(storage):
        assert storage[name] is False, f"{name} makes storage private before the app is integrated"


def test_a_later_provision_keeps_storage_private_throughout(main_bicep: dict[str, Any]) -> None:
    # Once it is private (the previous provision said so), no step opens it again, even for a moment.
    storage = _storage_deployments(main_bicep, STAYING_ON)
    assert storage and all(storage.values()), storage
    graph = dependency_graph(main_bicep)
    (integration,) = _integrating(main_bicep, STAYING_ON)
    assert any(integration in _after(graph, name) for name in storage)


def test_with_isolation_off_storage_is_public_and_the_app_not_integrated(main_bicep: dict[str, Any]) -> None:
    storage = _storage_deployments(main_bicep, OFF)
    assert storage and not any(storage.values()), storage
    assert _integrating(main_bicep, OFF) == [] and _private_endpoints(main_bicep, OFF) == []


def test_both_storage_deployments_declare_the_same_account(main_bicep: dict[str, Any]) -> None:
    # The second deployment updates the account the first created: same name and properties, except privateOnly.
    configs = [_config(m)["params"] for m in _modules(main_bicep).values() if m["detail"]["path"] == STORAGE]
    assert len(configs) == 2
    first, second = ({k: v for k, v in c.items() if k != "privateOnly"} for c in configs)
    assert first == second


def test_the_private_endpoints_point_at_that_account_and_the_app_waits_for_them(main_bicep: dict[str, Any]) -> None:
    graph = dependency_graph(main_bicep)
    (endpoints,) = _private_endpoints(main_bicep, TURNING_ON)
    storage_id = _config(_modules(main_bicep)[endpoints])["params"]["storageAccountId"]
    assert _referenced(storage_id, set(_modules(main_bicep))) == {"storage"}
    network = parse(_modules(main_bicep)[endpoints]["detail"]["path"])
    assert body(network["resources"]["dnsGroups"])["parent"]["operator"]["operands"]["operand_1"] == "endpoints"
    (integration,) = _integrating(main_bicep, TURNING_ON)
    assert endpoints in _after(graph, integration)  # integrated only once its DNS resolves storage privately


def test_the_next_provision_learns_that_storage_is_private(main_bicep: dict[str, Any]) -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["storageAlreadyPrivate"]["value"] == "${STORAGE_PRIVATE=false}"
    assert main_bicep["parameters"]["storageAlreadyPrivate"]["default"] is False
    assert main_bicep["outputs"]["STORAGE_PRIVATE"]["value"] == "networkIsolation"


def test_the_graph_has_no_cycle(main_bicep: dict[str, Any]) -> None:
    graph = dependency_graph(main_bicep)
    assert all(name not in _after(graph, name) for name in graph)


def test_the_dependency_graph_sees_implicit_and_explicit_edges(main_bicep: dict[str, Any]) -> None:
    # Guards the graph builder itself: the edges main.bicep is known to have.
    graph = dependency_graph(main_bicep)
    assert "storage" in graph["network"]  # reads storage.outputs.id
    assert {"rbac", "network", "storage", "monitoring", "entra", "identity"} <= graph["functionApp"]
    assert graph["storage"] == set() and graph["identity"] == set()
