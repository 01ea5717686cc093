"""Flow packages built as Power Automate's Export → Package (.zip) writes them, for the migration tests.

The shape of every document follows a real export published on GitHub (ronan-deshays/power-automate-cloud-utility-
flows, ``write_only_access_to_excel_table_using_outlook/``: manifest.json with resources keyed by GUID — the flow,
and per connector a ``Microsoft.PowerApps/apis`` and a ``Microsoft.PowerApps/apis/connections`` resource —,
``Microsoft.Flow/flows/manifest.json``, and per flow definition.json, apisMap.json, connectionsMap.json). The
Bookings trigger is written as Power Automate writes connector webhook triggers (``OpenApiConnectionWebhook``, host
``apiId`` / ``connectionName`` / ``operationId``, ``parameters``), with the operation ids and the ``SMTPAddress``
parameter of Microsoft's connector (microsoft/PowerPlatformConnectors, certified-connectors/Microsoft Bookings).
"""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

BOOKINGS = "shared_microsoftbookings"
CONNECTORS = {  # api name -> display name, as the manifest's resources name them
    BOOKINGS: "Microsoft Bookings",
    "shared_sharepointonline": "SharePoint",
    "shared_office365": "Office 365 Outlook",
}
AUTH = "@json(decodeBase64(triggerOutputs().headers['X-MS-APIM-Tokens']))['$ConnectionKey']"


def guid(seed: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def host(api: str, operation: str, key: str | None = None) -> dict[str, str]:
    return {"apiId": f"/providers/Microsoft.PowerApps/apis/{api}", "connectionName": key or api,
            "operationId": operation}


def bookings_trigger(operation: str = "CreateAppointment", smtp: str = "clinic@contoso.com") -> dict[str, Any]:
    return {"type": "OpenApiConnectionWebhook", "metadata": {"operationMetadataId": guid(operation)},
            "inputs": {"host": host(BOOKINGS, operation), "parameters": {"SMTPAddress": smtp},
                       "authentication": "@parameters('$authentication')"}}


def connector_action(api: str, operation: str, parameters: dict[str, Any], run_after: dict[str, Any] | None = None,
                     key: str | None = None) -> dict[str, Any]:
    return {"runAfter": run_after or {}, "metadata": {"operationMetadataId": guid(api + operation)},
            "type": "OpenApiConnection", "inputs": {"host": host(api, operation, key), "parameters": parameters,
                                                    "authentication": {"value": AUTH, "type": "Raw"}}}


def definition(display_name: str, triggers: dict[str, Any], actions: dict[str, Any], apis: list[str],
               flow_name: str) -> dict[str, Any]:
    """definition.json: the flow's own name differs from the package's asset folder, as in a real export."""
    return {
        "name": flow_name, "id": f"/providers/Microsoft.Flow/flows/{flow_name}", "type": "Microsoft.Flow/flows",
        "properties": {
            "apiId": "/providers/Microsoft.PowerApps/apis/shared_logicflows", "displayName": display_name,
            "definition": {
                "metadata": {"workflowEntityId": None, "creator": {"id": guid("creator"), "type": "User",
                                                                   "tenantId": guid("tenant")},
                             "provisioningMethod": "FromDefinition", "failureAlertSubscription": True},
                "$schema": "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/"
                           "workflowdefinition.json#",
                "contentVersion": "1.0.0.0",
                "parameters": {"$connections": {"defaultValue": {}, "type": "Object"},
                               "$authentication": {"defaultValue": {}, "type": "SecureObject"}},
                "triggers": triggers, "actions": actions,
            },
            "connectionReferences": {api: {"connectionName": f"shared-{api[7:]}-{guid(api + 'conn')}",
                                           "source": "Invoker", "id": f"/providers/Microsoft.PowerApps/apis/{api}",
                                           "tier": "NotSpecified"} for api in apis},
            "flowFailureAlertSubscribed": False, "isManaged": False,
        },
    }


def write_export(path: Path, flow: dict[str, Any], apis: list[str], asset: str | None = None,
                 extra: dict[str, bytes] | None = None) -> Path:
    """The .zip Export → Package (.zip) would write for ``flow`` (a definition.json) using the connectors ``apis``."""
    asset = asset or guid(flow["name"] + "asset")
    resources: dict[str, Any] = {asset: {
        "type": "Microsoft.Flow/flows", "suggestedCreationType": "Update", "creationType": "Existing, New, Update",
        "details": {"displayName": flow["properties"]["displayName"]}, "configurableBy": "User", "hierarchy": "Root",
        "dependsOn": [guid(api + k) for api in apis for k in ("api", "connection")]}}
    for api in apis:
        resources[guid(api + "api")] = {
            "id": f"/providers/Microsoft.PowerApps/apis/{api}", "name": api, "type": "Microsoft.PowerApps/apis",
            "suggestedCreationType": "Existing",
            "details": {"displayName": CONNECTORS[api], "iconUri": f"https://connectoricons-prod.azureedge.net/{api}"},
            "configurableBy": "System", "hierarchy": "Child", "dependsOn": []}
        resources[guid(api + "connection")] = {
            "type": "Microsoft.PowerApps/apis/connections", "suggestedCreationType": "Existing",
            "creationType": "Existing", "details": {"displayName": "maker@contoso.com",
                                                    "iconUri": f"https://connectoricons-prod.azureedge.net/{api}"},
            "configurableBy": "User", "hierarchy": "Child", "dependsOn": [guid(api + "api")]}
    manifest = {"schema": "1.0", "details": {"displayName": flow["properties"]["displayName"], "description": "",
                                             "createdTime": "2026-11-30T09:09:46.3195044Z",
                                             "packageTelemetryId": guid("telemetry"), "creator": "N/A",
                                             "sourceEnvironment": ""},
                "resources": resources}
    folder = f"Microsoft.Flow/flows/{asset}"
    documents = {
        "manifest.json": manifest,
        "Microsoft.Flow/flows/manifest.json": {"packageSchemaVersion": "1.0", "flowAssets": {"assetPaths": [asset]}},
        f"{folder}/definition.json": flow,
        f"{folder}/apisMap.json": {api: guid(api + "api") for api in apis},
        f"{folder}/connectionsMap.json": {api: guid(api + "connection") for api in apis},
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, document in documents.items():
            archive.writestr(name, json.dumps(document, separators=(",", ":")))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def body(field: str) -> str:
    return f"triggerOutputs()?['body/{field}']"


def bookings_to_crm(path: Path) -> Path:
    """The realistic sample: a booking becomes a SharePoint list item and every customer gets a welcome mail.

    The documents are shaped as the real export above; the steps follow a Bookings → SharePoint flow-builder script
    published on GitHub (found by searching public code for ``shared_microsoftbookings``; the search index does not
    name its repository): *When an appointment is created* on a business's SMTP address, fields read as
    ``triggerOutputs()?['body/X']``, a SharePoint item titled ``coalesce(CustomerName, CustomerEmail, 'New booking')``
    with the first staff member as owner and the ``SelfServiceAppointmentId`` recorded. Added so that each
    documented difference shows once: the item records ``Id`` to find it again later, a condition skips bookings
    whose notes are null, and a loop over ``Customers`` sends each customer a mail."""
    item = {
        "dataset": "https://contoso.sharepoint.com/sites/Clinic", "table": guid("list"),
        "item/Title": f"@concat('Booking — ', coalesce({body('CustomerName')}, {body('CustomerEmail')}, "
                      "'New booking'))",
        "item/BookingId": "@triggerBody()?['Id']",
        "item/Start": f"@{body('StartTime')}",
        "item/Owner/Claims": f"@concat('i:0#.f|membership|', first({body('StaffMembers')})?['EmailAddress'])",
        "item/Notes": "Service: @{triggerBody()?['ServiceName']}, self-service id "
                      "@{triggerBody()?['SelfServiceAppointmentId']}",
    }
    actions = {
        "Create_item": connector_action("shared_sharepointonline", "PostItem", item),
        "Condition": {"runAfter": {"Create_item": ["Succeeded"]}, "type": "If",
                      "expression": {"and": [{"not": {"equals": [f"@{body('CustomerNotes')}", "@null"]}}]},
                      "actions": {"Post_notes": connector_action("shared_sharepointonline", "PatchItem", {
                          "id": "@outputs('Create_item')?['body/ID']", "item/Notes": f"@{body('CustomerNotes')}"})},
                      "else": {"actions": {}}},
        "Apply_to_each": {"runAfter": {"Condition": ["Succeeded"]}, "type": "Foreach",
                          "foreach": f"@{body('Customers')}",
                          "actions": {"Send_an_email_(V2)": connector_action("shared_office365", "SendEmailV2", {
                              "emailMessage/To": "@items('Apply_to_each')?['Email']",
                              "emailMessage/Subject": "Welcome, @{items('Apply_to_each')?['Name']}",
                              "emailMessage/Body": f"<p>See you at @{{{body('StartTime')}}}</p>"})}},
    }
    apis = [BOOKINGS, "shared_sharepointonline", "shared_office365"]
    flow = definition("Bookings to CRM", {"When_an_appointment_is_created": bookings_trigger()}, actions, apis,
                      guid("bookings-to-crm"))
    return write_export(path, flow, apis)
