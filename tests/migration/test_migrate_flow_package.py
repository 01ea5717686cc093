"""scripts/migrate_flow_package.py on packages built as Export → Package (.zip) writes them
(tests/migration/packages.py): the Bookings operations move to this connector, everything else stays byte for byte,
the input is never written, the expressions that read fields whose values differ are reported, and what cannot move
is reported and left in place."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scripts import migrate_flow_package as tool
from tests.migration import packages as pkg

API = "shared_bookings-20appointment-20triggers-5f0027f520b23e81c1-5f9888a90360086012"
API_ID = f"/providers/Microsoft.PowerApps/apis/{API}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = tool.main([*argv, "--api-name", API, "--json"])
    return code, json.loads(capsys.readouterr().out)


def documents(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


def raw(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def only(docs: dict[str, Any], suffix: str) -> Any:
    (name,) = [name for name in docs if name.endswith(suffix) and name != "Microsoft.Flow/flows/manifest.json"]
    return docs[name]


def test_the_realistic_sample_moves_its_trigger_and_nothing_else(tmp_path: Path, capsys) -> None:
    source = pkg.bookings_to_crm(tmp_path / "Bookings to CRM.zip")
    code, report = run(capsys, str(source))
    assert code == 0 and report["status"] == "migrated" and report["written"]
    before, after = documents(source), documents(Path(report["output"]))
    assert list(after) == list(before)  # the same entries, in the same order
    assert raw(Path(report["output"]))["Microsoft.Flow/flows/manifest.json"] == raw(source)[
        "Microsoft.Flow/flows/manifest.json"]

    flow, old_flow = only(after, "definition.json"), only(before, "definition.json")
    trigger = flow["properties"]["definition"]["triggers"]["When_an_appointment_is_created"]
    assert trigger["type"] == "OpenApiConnectionWebhook"
    assert trigger["inputs"]["host"] == {"apiId": API_ID, "connectionName": API, "operationId": "CreateAppointment"}
    assert trigger["inputs"]["parameters"] == {"SMTPAddress": "clinic@contoso.com"}
    assert flow["properties"]["definition"]["actions"] == old_flow["properties"]["definition"]["actions"]
    references = flow["properties"]["connectionReferences"]
    assert list(references) == [API, "shared_sharepointonline", "shared_office365"]
    assert references[API]["id"] == API_ID
    assert references["shared_office365"] == old_flow["properties"]["connectionReferences"]["shared_office365"]
    # The connection's own id is carried, as for every connection of a package imported elsewhere: the import
    # replaces it with the connection picked for this connector.
    assert references[API]["connectionName"] == old_flow["properties"]["connectionReferences"][pkg.BOOKINGS][
        "connectionName"]
    del references[API]["connectionName"]
    assert "microsoftbookings" not in json.dumps(flow)

    resources = after["manifest.json"]["resources"]
    assert "microsoftbookings" not in json.dumps(after["manifest.json"])
    apis, connections = only(after, "apisMap.json"), only(after, "connectionsMap.json")
    assert list(apis) == list(connections) == [API, "shared_sharepointonline", "shared_office365"]
    assert resources[apis[API]]["type"] == "Microsoft.PowerApps/apis" and resources[apis[API]]["name"] == API
    assert resources[apis[API]]["details"]["displayName"] == "Bookings appointment triggers"
    assert resources[connections[API]]["type"] == "Microsoft.PowerApps/apis/connections"
    assert resources[connections[API]]["dependsOn"] == [apis[API]]
    (root,) = [r for r in resources.values() if r["type"] == "Microsoft.Flow/flows"]
    assert set(root["dependsOn"]) == set(apis.values()) | set(connections.values())
    for name in ("shared_sharepointonline", "shared_office365"):
        assert resources[apis[name]] == before["manifest.json"]["resources"][apis[name]]
    assert after["manifest.json"]["details"] == before["manifest.json"]["details"]


def test_the_input_package_is_never_written(tmp_path: Path, capsys) -> None:
    source = pkg.bookings_to_crm(tmp_path / "export.zip")
    digest, stamp = hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_mtime_ns
    assert run(capsys, str(source))[0] == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest and source.stat().st_mtime_ns == stamp
    assert (tmp_path / "export-migrated.zip").exists()
    with pytest.raises(SystemExit) as refused:
        tool.main([str(source), "--api-name", API, "--output", str(source), "--force"])
    assert refused.value.code == 2 and "never modified" in capsys.readouterr().err
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_the_report_lists_the_expressions_that_read_fields_whose_values_differ(tmp_path: Path, capsys) -> None:
    _, report = run(capsys, str(pkg.bookings_to_crm(tmp_path / "export.zip")))
    found = {(f["kind"], f["field"], f["where"]) for f in report["flows"][0]["findings"]}
    assert found == {
        ("null-check", "CustomerName", "actions.Create_item.inputs.parameters.item/Title"),
        ("id-not-unique", "Id", "actions.Create_item.inputs.parameters.item/BookingId"),
        ("null-check", "CustomerNotes", "actions.Condition.expression.and[0].not.equals"),
        ("customers-on-one-to-one", "Customers", "actions.Apply_to_each.foreach"),
    }
    assert all(f["severity"] == "changes" and f["advice"] for f in report["flows"][0]["findings"])
    tool.main([str(tmp_path / "export.zip"), "--api-name", API, "--dry-run"])
    text = capsys.readouterr().out
    assert "use AppointmentId" in text and "MaxAttendeesCount > 1" in text and "Dry run: nothing was written" in text


def flow_with(triggers: dict[str, Any], actions: dict[str, Any], apis: list[str],
              references: dict[str, Any] | None = None) -> dict[str, Any]:
    flow = pkg.definition("Cancelled bookings", triggers, actions, apis, pkg.guid("cancelled"))
    if references is not None:
        flow["properties"]["connectionReferences"] = references
    return flow


def test_update_cancel_and_nested_bookings_actions_move(tmp_path: Path, capsys) -> None:
    listing = pkg.connector_action(pkg.BOOKINGS, "ListBookingsBusinessUserAsAdmin", {})
    actions = {"Switch": {"type": "Switch", "expression": "@triggerBody()?['ServiceName']",
                          "cases": {"Bikes": {"case": "Bikes", "actions": {"List_businesses": listing}}},
                          "default": {"actions": {"Scope": {"type": "Scope", "actions": {
                              "If": {"type": "If", "expression": "@empty(triggerBody()?['CancelReason'])",
                                     "actions": {}, "else": {"actions": {"List_again": listing}}}}}}}}}
    flow = flow_with({"When_cancelled": pkg.bookings_trigger("CancelAppointment")}, actions, [pkg.BOOKINGS])
    code, report = run(capsys, str(pkg.write_export(tmp_path / "p.zip", flow, [pkg.BOOKINGS])))
    moved = {(m["name"], m["operation"], m["becomes"]) for m in report["flows"][0]["moved"]}
    assert code == 0 and moved == {("When_cancelled", "CancelAppointment", "CancelAppointment"),
                                   ("List_businesses", "ListBookingsBusinessUserAsAdmin", "GetBusinessesAsAdmin"),
                                   ("List_again", "ListBookingsBusinessUserAsAdmin", "GetBusinessesAsAdmin")}
    after = json.dumps(only(documents(Path(report["output"])), "definition.json")["properties"]["definition"])
    assert "microsoftbookings" not in after and after.count('"operationId": "GetBusinessesAsAdmin"') == 2
    assert [f["kind"] for f in report["flows"][0]["findings"]] == ["empty-check"]


def test_an_operation_this_connector_lacks_is_reported_and_left_on_microsofts_connector(tmp_path: Path,
                                                                                         capsys) -> None:
    unknown = pkg.connector_action(pkg.BOOKINGS, "GetStaffAvailability", {"SMTPAddress": "clinic@contoso.com"})
    flow = flow_with({"When_updated": pkg.bookings_trigger("UpdateAppointment")}, {"Availability": unknown},
                     [pkg.BOOKINGS])
    source = pkg.write_export(tmp_path / "p.zip", flow, [pkg.BOOKINGS])
    code, report = run(capsys, str(source))
    assert code == tool.EXIT_LEFT_BEHIND and report["status"] == "incomplete" and report["written"]
    (left,) = report["flows"][0]["left"]
    assert (left["name"], left["operation"]) == ("Availability", "GetStaffAvailability") and left["reason"]
    after = documents(Path(report["output"]))
    definition = only(after, "definition.json")["properties"]
    assert definition["definition"]["actions"]["Availability"] == unknown  # untouched, still Microsoft's
    assert definition["definition"]["triggers"]["When_updated"]["inputs"]["host"]["apiId"] == API_ID
    assert set(definition["connectionReferences"]) == {pkg.BOOKINGS, API}
    resources = after["manifest.json"]["resources"]
    for mapping in (only(after, "apisMap.json"), only(after, "connectionsMap.json")):
        assert set(mapping) == {pkg.BOOKINGS, API} and all(guid in resources for guid in mapping.values())
    tool.main([str(source), "--api-name", API, "--dry-run"])
    assert "LEFT   action Availability: GetStaffAvailability stays on Microsoft's connector" in capsys.readouterr().out


def test_parameters_the_connector_does_not_declare_are_kept_and_named(tmp_path: Path, capsys) -> None:
    trigger = pkg.bookings_trigger()
    trigger["inputs"]["parameters"]["body/futureOption"] = True
    flow = flow_with({"When_created": trigger}, {}, [pkg.BOOKINGS])
    code, report = run(capsys, str(pkg.write_export(tmp_path / "p.zip", flow, [pkg.BOOKINGS])))
    assert code == 0 and report["flows"][0]["moved"][0]["undeclared_parameters"] == ["body/futureOption"]
    moved = only(documents(Path(report["output"])), "definition.json")["properties"]["definition"]["triggers"]
    assert moved["When_created"]["inputs"]["parameters"] == {"SMTPAddress": "clinic@contoso.com",
                                                             "body/futureOption": True}


def test_a_solution_style_reference_and_a_second_bookings_connection_are_renamed(tmp_path: Path, capsys) -> None:
    references = {
        pkg.BOOKINGS: {"runtimeSource": "embedded", "connection": {"connectionReferenceLogicalName": "cr_bookings"},
                       "api": {"name": pkg.BOOKINGS}},
        f"{pkg.BOOKINGS}_1": {"runtimeSource": "embedded", "connection": {"connectionReferenceLogicalName": "cr_b2"},
                              "api": {"name": pkg.BOOKINGS}},
    }
    second = pkg.connector_action(pkg.BOOKINGS, "ListBookingsBusinessUserAsAdmin", {}, key=f"{pkg.BOOKINGS}_1")
    flow = flow_with({"When_created": pkg.bookings_trigger()}, {"List": second}, [pkg.BOOKINGS], references)
    code, report = run(capsys, str(pkg.write_export(tmp_path / "p.zip", flow, [pkg.BOOKINGS])))
    properties = only(documents(Path(report["output"])), "definition.json")["properties"]
    assert code == 0 and list(properties["connectionReferences"]) == [API, f"{API}_1"]
    assert properties["connectionReferences"][f"{API}_1"]["api"] == {"name": API}
    assert properties["definition"]["actions"]["List"]["inputs"]["host"]["connectionName"] == f"{API}_1"
    assert report["flows"][0]["connections"] == {pkg.BOOKINGS: API, f"{pkg.BOOKINGS}_1": f"{API}_1"}


def test_an_unknown_file_naming_microsofts_connector_is_copied_and_named(tmp_path: Path, capsys) -> None:
    flow = flow_with({"When_created": pkg.bookings_trigger()}, {}, [pkg.BOOKINGS])
    extra = {"connections.json": b'{"shared_microsoftbookings": {"connectionName": "x"}}', "notes.txt": b"hello"}
    source = pkg.write_export(tmp_path / "p.zip", flow, [pkg.BOOKINGS], extra=extra)
    code, report = run(capsys, str(source))
    assert code == 0 and report["untouchedMentions"] == ["connections.json"]
    copied = raw(Path(report["output"]))
    assert copied["connections.json"] == extra["connections.json"] and copied["notes.txt"] == b"hello"


def test_running_twice_writes_the_same_package(tmp_path: Path, capsys) -> None:
    source = pkg.bookings_to_crm(tmp_path / "export.zip")
    run(capsys, str(source), "--output", str(tmp_path / "one.zip"))
    run(capsys, str(source), "--output", str(tmp_path / "two.zip"))
    assert documents(tmp_path / "one.zip") == documents(tmp_path / "two.zip")


def test_a_package_without_bookings_is_left_alone(tmp_path: Path, capsys) -> None:
    action = pkg.connector_action("shared_office365", "SendEmailV2", {"emailMessage/To": "a@contoso.com"})
    flow = flow_with({"manual": {"type": "Request", "kind": "Button", "inputs": {"schema": {}}}},
                     {"Send": action}, ["shared_office365"])
    code, report = run(capsys, str(pkg.write_export(tmp_path / "p.zip", flow, ["shared_office365"])))
    assert code == 0 and report["status"] == "nothing-to-migrate" and not report["written"]
    assert not (tmp_path / "p-migrated.zip").exists()


def broken_packages(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    def archive(name: str, files: dict[str, str]) -> Path:
        with zipfile.ZipFile(tmp_path / name, "w") as zipped:
            for entry, text in files.items():
                zipped.writestr(entry, text)
        return tmp_path / name

    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    flows = '{"packageSchemaVersion":"1.0","flowAssets":{"assetPaths":["abc"]}}'
    return {
        "not a zip": (text, "not a readable zip archive"),
        "missing": (tmp_path / "nowhere.zip", "cannot be read"),
        "no manifest": (archive("a.zip", {"readme.txt": "hi"}), "no manifest.json"),
        "solution": (archive("s.zip", {"solution.xml": "<x/>", "customizations.xml": "<x/>"}), "solution export"),
        "bad json": (archive("b.zip", {"manifest.json": "{", "x": ""}), "manifest.json is not valid JSON"),
        "no flow": (archive("c.zip", {"manifest.json": '{"resources": {}}'}), "no flow in the package"),
        "no definition": (archive("d.zip", {"manifest.json": '{"resources": {}}',
                                            "Microsoft.Flow/flows/manifest.json": flows}),
                          "definition.json is missing"),
        "not a flow": (archive("e.zip", {"manifest.json": '{"resources": {}}',
                                         "Microsoft.Flow/flows/manifest.json": flows,
                                         "Microsoft.Flow/flows/abc/definition.json": "[]"}), "not a JSON object"),
    }


def test_a_file_that_is_not_a_flow_package_is_a_clear_error(tmp_path: Path, capsys) -> None:
    for case, (path, message) in broken_packages(tmp_path).items():
        code = tool.main([str(path), "--api-name", API, "--json"])
        captured = capsys.readouterr()
        assert code == tool.EXIT_NOT_A_PACKAGE, case
        assert message in captured.err, (case, captured.err)
        assert json.loads(captured.out)["error"]["code"] == "NotAFlowPackage", case
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p, _ in broken_packages(tmp_path).values() if p.exists())  # nothing written beside them


@pytest.mark.parametrize(("argv", "message"), [
    (["--api-name", "shared_microsoftbookings"], "not a custom connector"),
    (["--api-name", "bookings; rm -rf /"], "not a custom connector"),
    (["--api-name", API, "--output", "/nonexistent-folder/out.zip"], "is not a folder"),
])
def test_arguments_are_checked(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as refused:
        tool.main([str(pkg.bookings_to_crm(tmp_path / "p.zip")), *argv])
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_an_existing_output_is_replaced_only_with_force(tmp_path: Path, capsys) -> None:
    source = pkg.bookings_to_crm(tmp_path / "p.zip")
    (tmp_path / "out.zip").write_text("mine")
    with pytest.raises(SystemExit) as refused:
        tool.main([str(source), "--api-name", API, "--output", str(tmp_path / "out.zip")])
    assert refused.value.code == 2 and (tmp_path / "out.zip").read_text() == "mine"
    capsys.readouterr()
    code, _ = run(capsys, str(source), "--output", str(tmp_path / "out.zip"), "--force")
    assert code == 0 and "manifest.json" in documents(tmp_path / "out.zip")


def test_every_mapped_operation_is_one_of_this_connectors(capsys) -> None:
    target = tool.load_target(API, None)
    swagger = json.loads(tool.SWAGGER.read_text())
    triggers = {op["operationId"] for path in swagger["paths"].values() for op in path.values()
                if isinstance(op, dict) and op.get("x-ms-trigger")}
    for microsoft, ours in tool.OPERATIONS.items():
        assert ours in target.parameters, ours
        assert (microsoft in ("CreateAppointment", "UpdateAppointment", "CancelAppointment")) == (ours in triggers)
        if ours in triggers:  # Microsoft's triggers take SMTPAddress; ours declare it under the same name
            assert "SMTPAddress" in target.parameters[ours]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                           | st.sampled_from([pkg.BOOKINGS, "CreateAppointment", "@triggerBody()?['Id']"]),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["host", "inputs", "actions", "apiId", "connectionName",
                                                              "operationId", "else", "cases", pkg.BOOKINGS, "x"]),
                                             children, max_size=4), max_leaves=12)


hosts = st.fixed_dictionaries({"type": st.just("OpenApiConnection"), "inputs": st.fixed_dictionaries(
    {"host": st.dictionaries(st.sampled_from(["apiId", "connectionName", "operationId", "connection"]),
                             json_values | st.just(f"/providers/Microsoft.PowerApps/apis/{pkg.BOOKINGS}")),
     "parameters": json_values})})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(triggers=hosts, actions=json_values | st.dictionaries(st.text(max_size=3), hosts, max_size=3),
       references=json_values)
def test_odd_shapes_inside_a_package_never_crash_the_command(tmp_path: Path, capsys, triggers: Any, actions: Any,
                                                             references: Any) -> None:
    flow = flow_with({"When_created": pkg.bookings_trigger()}, {}, [pkg.BOOKINGS])
    flow["properties"]["definition"]["triggers"]["Odd"] = triggers
    flow["properties"]["definition"]["actions"] = actions
    flow["properties"]["connectionReferences"][pkg.BOOKINGS] = references
    source = pkg.write_export(tmp_path / "odd.zip", flow, [pkg.BOOKINGS])
    code = tool.main([str(source), "--api-name", API, "--dry-run", "--json"])
    assert code in (0, 1) and json.loads(capsys.readouterr().out)["exitCode"] == code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resource=st.dictionaries(st.sampled_from(["type", "name", "id", "details", "dependsOn"]),
                                json_values | st.sampled_from(["Microsoft.PowerApps/apis", pkg.BOOKINGS,
                                                               "Microsoft.PowerApps/apis/connections"])))
@example(resource={"type": "Microsoft.PowerApps/apis/connections", "dependsOn": [["x"], {"a": 1}]})
@example(resource={"type": "Microsoft.Flow/flows", "dependsOn": [{"a": 1}, pkg.guid(pkg.BOOKINGS + "api")]})
def test_odd_resources_in_the_manifest_never_crash_the_command(tmp_path: Path, capsys, resource: Any) -> None:
    flow = flow_with({"When_created": pkg.bookings_trigger()}, {}, [pkg.BOOKINGS])
    source = pkg.write_export(tmp_path / "odd.zip", flow, [pkg.BOOKINGS])
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(entries["manifest.json"])
    manifest["resources"][pkg.guid(pkg.BOOKINGS + "connection")] = resource
    manifest["resources"]["odd"] = resource
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(source, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    assert tool.main([str(source), "--api-name", API, "--output", str(tmp_path / "out.zip"), "--force"]) == 0
    capsys.readouterr()
