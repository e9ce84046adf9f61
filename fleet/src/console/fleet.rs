//! The fleet pages' handlers: the devices list (filtered, sorted and paged by the database), bulk
//! actions, sites and rooms, claim tokens and provisioning files. They parse
//! ([`super::fleet_view`]), call `ops`, render ([`super::fleet_pages`]); access is the policy
//! table's and every per-device check is the operation's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use medgate_contract::{DeviceId, SiteId};
use serde::Deserialize;

use super::fleet_pages as pages;
use super::fleet_view::{self, ListQuery, SiteForm};
use super::{error_page, op_error_page, page};
use crate::app::App;
use crate::auth::policy::Permission;
use crate::ops::{Actor, OpError};
use crate::store::fleet::SiteDetail;

fn may(actor: &Actor, p: Permission) -> bool {
    p.granted_to(actor.principal.role)
}

fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "bad redirect", None),
    }
}

fn status_of(e: &OpError) -> StatusCode {
    match e {
        OpError::Invalid(_) | OpError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        OpError::Conflict(_) => StatusCode::CONFLICT,
        OpError::Forbidden(_) => StatusCode::FORBIDDEN,
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /devices?site=&status=&connection=&version=&profile=&tag=&q=&attention=&sort=&dir=&page=`.
pub async fn devices(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListQuery>,
) -> Response {
    let who = Some(&actor.principal);
    let v = match q.view() {
        Ok(v) => v,
        Err(msg) => return error_page(StatusCode::BAD_REQUEST, &msg, who),
    };
    let scope = &actor.principal.sites;
    let (p, sites, facets) = match (
        app.ops.device_page(scope, &v.sel, v.order, v.page).await,
        app.ops.sites(scope).await,
        app.ops.facets(scope).await,
    ) {
        (Ok(p), Ok(s), Ok(f)) => (p, s, f),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return op_error_page(&e, who),
    };
    page(
        StatusCode::OK,
        pages::devices(
            &actor.principal,
            &v,
            &p,
            &sites,
            &facets,
            crate::store::now_db(),
            may(&actor, Permission::DevicesOperate),
        ),
    )
}

/// `POST /devices/bulk`: an action over the checked rows or every matching device (which asks
/// for a confirmation first); the result device by device.
pub async fn bulk(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Response {
    let who = Some(&actor.principal);
    let f = match fleet_view::bulk_form(&body) {
        Ok(f) => f,
        Err(e) => return error_page(status_of(&e), &e.to_string(), who),
    };
    if pages::is_all(&f) && !f.confirmed {
        return match app
            .ops
            .store
            .selected_devices(&f.list.sel, &actor.principal.sites)
            .await
        {
            Ok(ids) => page(
                StatusCode::OK,
                pages::bulk_confirm(&actor.principal, &f, ids.len()),
            ),
            Err(e) => op_error_page(&OpError::Store(e), who),
        };
    }
    let back = f.list.url(f.list.order, 1);
    match app.ops.bulk(&actor, f.target, f.action).await {
        Ok(report) => page(
            StatusCode::OK,
            pages::bulk_result(&actor.principal, &report, &back),
        ),
        Err(e) => error_page(status_of(&e), &e.to_string(), who),
    }
}

/// `GET /sites`.
pub async fn sites(State(app): State<Arc<App>>, Extension(actor): Extension<Actor>) -> Response {
    match app.ops.site_details(&actor.principal.sites).await {
        Ok(s) => page(
            StatusCode::OK,
            pages::sites(
                &actor.principal,
                &s,
                may(&actor, Permission::SitesManage),
                None,
                None,
            ),
        ),
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// `POST /sites`: creates a site.
pub async fn create_site(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Form(f): Form<SiteForm>,
) -> Response {
    let done = async {
        let id = SiteId::new(f.id.trim()).map_err(|e| OpError::Invalid(format!("site id: {e}")))?;
        if app.ops.store.site_detail(id.as_str()).await?.is_some() {
            return Err(OpError::Conflict(format!(
                "site {id} exists already: open it to edit it"
            )));
        }
        app.ops.save_site(&actor, &id, f.edit()?).await
    }
    .await;
    match done {
        Ok(s) => redirect(&format!("/sites/{}?saved=1", super::view::encode(&s.id))),
        Err(e) if status_of(&e).is_client_error() => {
            let all = app
                .ops
                .site_details(&actor.principal.sites)
                .await
                .unwrap_or_default();
            page(
                status_of(&e),
                pages::sites(&actor.principal, &all, true, Some(&e.to_string()), Some(&f)),
            )
        }
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// `GET /sites/{id}?saved=1`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SiteQuery {
    saved: String,
}

/// `GET /sites/{id}`.
pub async fn site(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let who = Some(&actor.principal);
    match app.ops.site_detail(&actor.principal.sites, &id).await {
        Ok(Some(s)) => page(
            StatusCode::OK,
            pages::site(
                &actor.principal,
                &s,
                may(&actor, Permission::SitesManage),
                may(&actor, Permission::ClaimsCreate),
                None,
                None,
                (q.saved == "1").then_some("Saved."),
            ),
        ),
        Ok(None) => error_page(StatusCode::NOT_FOUND, &format!("no site {id:?}"), who),
        Err(e) => op_error_page(&e, who),
    }
}

/// The site `id` as the actor may see it, or the page that says why not (404 for a site that
/// does not exist or is not one of theirs).
async fn site_or_page(app: &App, actor: &Actor, id: &str) -> Result<SiteDetail, Response> {
    let who = Some(&actor.principal);
    match app.ops.site_detail(&actor.principal.sites, id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            &format!("no site {id:?}"),
            who,
        )),
        Err(e) => Err(op_error_page(&e, who)),
    }
}

/// `POST /sites/{id}`: saves name, time zone and rooms.
pub async fn save_site(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<SiteForm>,
) -> Response {
    let who = Some(&actor.principal);
    let s = match site_or_page(&app, &actor, &id).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let done = async {
        let site = SiteId::new(id.as_str()).map_err(|e| OpError::Invalid(e.to_string()))?;
        app.ops.save_site(&actor, &site, f.edit()?).await
    }
    .await;
    match done {
        Ok(s) => redirect(&format!("/sites/{}?saved=1", super::view::encode(&s.id))),
        Err(e) if status_of(&e).is_client_error() => page(
            status_of(&e),
            pages::site(
                &actor.principal,
                &s,
                true,
                may(&actor, Permission::ClaimsCreate),
                Some(&e.to_string()),
                Some(&f),
                None,
            ),
        ),
        Err(e) => op_error_page(&e, who),
    }
}

/// The claim form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClaimForm {
    device: String,
    room: String,
}

/// `POST /sites/{id}/claims`: a claim token, shown once.
pub async fn create_claim(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<ClaimForm>,
) -> Response {
    let who = Some(&actor.principal);
    let s = match site_or_page(&app, &actor, &id).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let done = async {
        let site = SiteId::new(id.as_str()).map_err(|e| OpError::Invalid(e.to_string()))?;
        let device = DeviceId::new(f.device.trim())
            .map_err(|e| OpError::Invalid(format!("device id: {e}")))?;
        app.ops
            .claim_for_room(&actor, site, device, Some(f.room.as_str()))
            .await
    }
    .await;
    match done {
        Ok(c) => {
            let room = Some(f.room.trim()).filter(|r| !r.is_empty());
            page(
                StatusCode::OK,
                pages::claim_issued(&actor.principal, &s, &c, room),
            )
        }
        Err(e) if status_of(&e).is_client_error() => page(
            status_of(&e),
            pages::site(
                &actor.principal,
                &s,
                may(&actor, Permission::SitesManage),
                true,
                Some(&e.to_string()),
                None,
                None,
            ),
        ),
        Err(e) => op_error_page(&e, who),
    }
}

/// The provisioning form: the claim token the page was shown.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProvisioningForm {
    token: String,
}

/// `POST /sites/{id}/provisioning`: the provisioning file around a still unused claim token
/// of the site, as a download.
pub async fn provisioning(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ProvisioningForm>,
) -> Response {
    let scheme = if app.ops.config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("{scheme}://{host}");
    match app.ops.provisioning(&actor, &id, &f.token, &base).await {
        Ok(p) => crate::api::attachment(
            p.text,
            "application/toml; charset=utf-8",
            &p.file_name,
            None,
        ),
        Err(e) => error_page(status_of(&e), &e.to_string(), Some(&actor.principal)),
    }
}
