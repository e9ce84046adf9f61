//! The OpenAPI document served at `/api/v1/openapi.json`, generated (utoipa) from the handlers'
//! annotations and the request and response types, with their schemas. [`ROUTES`] lists the
//! router's routes: a test checks that each is documented.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

/// (method, path under /api/v1) of every route of the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/devices"),
    ("get", "/devices/{id}"),
    ("patch", "/devices/{id}"),
    ("post", "/devices/{id}/approve"),
    ("post", "/devices/{id}/revoke"),
    ("post", "/devices/{id}/decommission"),
    ("get", "/devices/{id}/events"),
    ("get", "/devices/{id}/telemetry"),
    ("get", "/devices/{id}/peers"),
    ("post", "/devices/{id}/peers/approve"),
    ("get", "/devices/{id}/config"),
    ("put", "/devices/{id}/config"),
    ("get", "/devices/{id}/commands"),
    ("post", "/devices/{id}/commands"),
    ("get", "/commands/{id}"),
    ("get", "/sites"),
    ("put", "/sites/{id}"),
    ("put", "/sites/{id}/config"),
    ("put", "/tags/{tag}/config"),
    ("get", "/events"),
    ("post", "/claims"),
    ("post", "/enroll"),
    ("get", "/live"),
    ("get", "/openapi.json"),
];

/// The bearer scheme of the admin token.
struct Admin;

impl Modify for Admin {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "admin",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Medgate fleet manager",
        description = "Registry, inventory, telemetry, events, configuration and commands of Medgate appliances. No patient data is ever stored or served."
    ),
    servers((url = "/api/v1")),
    paths(
        api::list_devices,
        api::get_device,
        api::patch_device,
        api::approve_device,
        api::revoke_device,
        api::decommission_device,
        api::device_events,
        api::device_telemetry,
        api::device_peers,
        api::approve_peer,
        api::device_config,
        api::put_device_config,
        api::device_commands,
        api::post_command,
        api::get_command,
        api::list_sites,
        api::put_site,
        api::put_site_config,
        api::put_tag_config,
        api::list_events,
        api::create_claim,
        api::enroll,
        api::live,
        api::openapi_json,
    ),
    modifiers(&Admin)
)]
struct ApiDoc;

/// The document.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_schemas() {
        let doc = document();
        for (method, path) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        let schemas = &doc["components"]["schemas"];
        for s in [
            "Device",
            "CommandRecord",
            "DeviceConfig",
            "Drift",
            "ErrorBody",
        ] {
            assert!(schemas[s].is_object(), "{s} in {schemas}");
        }
        assert_eq!(
            doc["paths"]["/devices"]["get"]["security"],
            serde_json::json!([{"admin": []}])
        );
    }
}
