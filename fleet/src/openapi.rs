//! The OpenAPI document served at `/api/v1/openapi.json`, generated (utoipa) from the handlers'
//! annotations and the request and response types, with their schemas. [`ROUTES`] lists the
//! router's routes: a test checks that each is documented.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

/// (method, path under /api/v1) of every API route: the policy table's (the router is built
/// from it), so a route added there without documentation fails the test below.
pub fn api_routes() -> Vec<(String, &'static str)> {
    crate::auth::policy::ROUTES
        .iter()
        .filter_map(|r| {
            r.path
                .strip_prefix("/api/v1")
                .map(|p| (r.verb.to_string().to_lowercase(), p))
        })
        .collect()
}

/// The bearer scheme: a personal API token (`mgt_…`) or the break-glass admin token. Browser
/// sessions use the cookie of `/auth/login` instead, with `X-CSRF-Token` on state changes.
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
        api::get_command_file,
        api::list_sites,
        api::put_site,
        api::put_site_config,
        api::put_tag_config,
        api::list_events,
        api::create_claim,
        api::enroll,
        api::live,
        api::openapi_json,
        api::account::setup,
        api::account::login,
        api::account::logout,
        api::account::me,
        api::account::my_sessions,
        api::account::revoke_my_session,
        api::account::my_tokens,
        api::account::create_token,
        api::account::revoke_token,
        api::account::list_users,
        api::account::create_user,
        api::account::patch_user,
        api::account::user_sessions,
        api::account::revoke_user_sessions,
        api::account::audit,
        // alerts (issue 13 part 3)
        api::list_alerts,
        api::ack_alert,
        api::silence_alert,
        // analytics (issue 13 part 2)
        api::analytics_overview,
        api::analytics_daily,
        api::analytics_trend,
        api::analytics_devices,
        api::analytics_delay,
        // ota (issue 14 part 2)
        api::upload_bundle,
        api::list_bundles,
        api::get_bundle,
        api::create_campaign,
        api::list_campaigns,
        api::get_campaign,
        api::approve_campaign,
        api::pause_campaign,
        api::resume_campaign,
        api::cancel_campaign,
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
        let routes = api_routes();
        assert!(routes.len() > 30, "{routes:?}");
        for (method, path) in routes {
            assert!(doc["paths"][path][&method].is_object(), "{method} {path}");
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
