//! The OpenAPI 3.0 document served at `/api/v1/openapi.json`, built from the route table below
//! (a test checks that every route answers as documented).

use serde_json::{Map, Value, json};

/// (method, path under /api/v1, summary, needs the admin token, has a JSON body).
pub const ROUTES: &[(&str, &str, &str, bool, bool)] = &[
    (
        "get",
        "/devices",
        "List devices (optional ?site=) with connection, registry status, inventory and config drift",
        true,
        false,
    ),
    ("get", "/devices/{id}", "One device", true, false),
    (
        "patch",
        "/devices/{id}",
        "Set room and tags: {\"room\": …, \"tags\": […]}",
        true,
        true,
    ),
    (
        "post",
        "/devices/{id}/approve",
        "Approve a device (pending → approved)",
        true,
        false,
    ),
    (
        "post",
        "/devices/{id}/revoke",
        "Revoke a device: its messages are refused",
        true,
        false,
    ),
    (
        "post",
        "/devices/{id}/decommission",
        "Decommission a device",
        true,
        false,
    ),
    (
        "get",
        "/devices/{id}/events",
        "Events of a device, newest first (?since_ms=&limit=), with the total count",
        true,
        false,
    ),
    (
        "get",
        "/devices/{id}/telemetry",
        "Telemetry history (?from_ms=&to_ms=&limit=): raw samples and downsampled buckets",
        true,
        false,
    ),
    (
        "get",
        "/devices/{id}/peers",
        "Calling AEs the device has seen (AE, IP, SOP classes, accepted or refused)",
        true,
        false,
    ),
    (
        "post",
        "/devices/{id}/peers/approve",
        "Approve a calling AE: adds it to the device's allow-list via its desired configuration",
        true,
        true,
    ),
    (
        "get",
        "/devices/{id}/config",
        "Desired and reported configuration, with drift",
        true,
        false,
    ),
    (
        "put",
        "/devices/{id}/config",
        "Set the device's desired configuration {\"config\": {…appliance TOML as JSON…}}; validated by the appliance's code",
        true,
        true,
    ),
    (
        "get",
        "/devices/{id}/commands",
        "Commands sent to a device and their results",
        true,
        false,
    ),
    (
        "post",
        "/devices/{id}/commands",
        "Send a command {\"action\": {\"type\": \"restart|retry_quarantine|purge_quarantine|collect_diagnostics|retry_now\"}, \"expires_in_secs\": …} (purge_quarantine: older_than_secs?; retry_now: destination? — all destinations without it)",
        true,
        true,
    ),
    (
        "get",
        "/commands/{id}",
        "One command and its delivery/result state",
        true,
        false,
    ),
    (
        "get",
        "/sites",
        "Sites with device and online counts",
        true,
        false,
    ),
    (
        "put",
        "/sites/{id}",
        "Create or rename a site {\"name\": …}",
        true,
        true,
    ),
    (
        "put",
        "/sites/{id}/config",
        "Desired configuration for every device of a site (below tag and device configurations)",
        true,
        true,
    ),
    (
        "put",
        "/tags/{tag}/config",
        "Desired configuration for every device with a tag (below device configurations)",
        true,
        true,
    ),
    (
        "get",
        "/events",
        "Events of the fleet, newest first (?device=&since_ms=&limit=)",
        true,
        false,
    ),
    (
        "post",
        "/claims",
        "Create a one-time claim token for a device {\"site\": …, \"device\": …}",
        true,
        true,
    ),
    (
        "post",
        "/enroll",
        "Enroll with a claim token {\"token\": …, \"csr_pem\": …}: returns the device certificate, the CA and the broker",
        false,
        true,
    ),
    (
        "get",
        "/live",
        "Live feed (text/event-stream): a full snapshot, then device, event and command changes",
        true,
        false,
    ),
    ("get", "/openapi.json", "This document", false, false),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, auth, body) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"}
            }
        });
        if *auth {
            op["security"] = json!([{"admin": []}]);
            op["responses"]["401"] = json!({"$ref": "#/components/responses/Error"});
        }
        if *body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Medgate fleet manager",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Registry, inventory, telemetry, events, configuration and commands of Medgate appliances. No patient data is ever stored or served."
        },
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}, "problems": {"type": "array", "items": {"type": "string"}}}
            }}}}}
        }
    })
}
