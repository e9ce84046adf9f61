//! The device page's handlers (`/devices/{id}` and below): they parse, call `ops`, render with
//! [`super::device_page`]. Access is the policy table's (`api::guard`: DevicesRead to look,
//! DevicesOperate to change, the device's site in scope) — nothing here checks a role; the
//! page only hides controls the role cannot use.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use medgate_contract::{CommandAction, Token};
use serde::Deserialize;
use serde_json::{Value, json};

use super::device_page::{self, DevicePage, Editor};
use super::device_view::{self, Checked, KeyedProblem, Range};
use super::view::encode;
use super::{error_page, op_error_page, page};
use crate::app::App;
use crate::auth::policy::Permission;
use crate::model::{
    CommandRecord, ConfigScope, Device, DeviceConfig, DeviceIdentity, EventRecord, PeerRecord,
    TelemetrySample,
};
use crate::ops::{Actor, OpError};

/// Events and commands shown.
const RECENT: usize = 20;

/// What the page reads, owned.
struct Loaded {
    device: Device,
    identity: Option<DeviceIdentity>,
    config: DeviceConfig,
    latest: Option<TelemetrySample>,
    peers: Vec<PeerRecord>,
    events: Vec<EventRecord>,
    commands: Vec<CommandRecord>,
    schema: u32,
    running: Result<String, String>,
}

async fn load(app: &App, id: &str) -> Result<Loaded, OpError> {
    let ops = &app.ops;
    let device = ops
        .device(id)
        .await?
        .ok_or_else(|| OpError::NotFound("no such device".into()))?;
    let config = ops
        .device_config(id)
        .await?
        .ok_or_else(|| OpError::NotFound("no such device".into()))?;
    let running = match &config.reported {
        None => Err("The device has not reported its configuration yet.".to_owned()),
        Some(r) if r.running_version == 0 => Err(
            "The device runs its local file (version 0): the fleet has no copy of it to compare with."
                .to_owned(),
        ),
        Some(r) => match ops.desired_version(id, r.running_version).await? {
            Some(doc) => Ok(device_view::toml_text(&doc)),
            None => Err(format!(
                "The device runs version {}, which is no longer in the fleet's history.",
                r.running_version
            )),
        },
    };
    let mut commands = ops.commands(id).await?;
    commands.truncate(RECENT);
    Ok(Loaded {
        identity: ops.device_identity(id).await?,
        latest: ops.latest_telemetry(id).await?,
        peers: ops.peers(id).await?,
        events: ops.events(Some(id), 0, Some(20)).await?,
        commands,
        schema: ops.config_schema_of(id).await?,
        running,
        config,
        device,
    })
}

fn desired_text(l: &Loaded) -> String {
    match &l.config.desired {
        Some(d) => device_view::toml_text(&d.config),
        None => "# The fleet sets no configuration for this device yet: it runs its local file.\n\
                 # Write the fleet-owned tables here: [appliance] name, [listener], [spool], [forward],\n\
                 # [[destination]], [rules], [commitment], [worklist], [qc].\n"
            .to_owned(),
    }
}

fn render(
    actor: &Actor,
    l: &Loaded,
    range: Range,
    editor: Editor,
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    let p = DevicePage {
        device: &l.device,
        identity: l.identity.as_ref(),
        config: &l.config,
        latest: l.latest.as_ref(),
        peers: &l.peers,
        events: &l.events,
        commands: &l.commands,
        range,
        editor,
        can_operate: Permission::DevicesOperate.granted_to(actor.principal.role),
        notice,
        now_ms: crate::store::now_db(),
    };
    page(status, device_page::device(&actor.principal, &p))
}

/// `GET /devices/{id}?range=&saved=&sent=`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    range: Option<String>,
    saved: Option<i64>,
    sent: Option<String>,
}

/// `GET /devices/{id}`: the device page.
pub async fn device(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let who = Some(&actor.principal);
    let range = match Range::parse(q.range.as_deref()) {
        Ok(r) => r,
        Err(msg) => return error_page(StatusCode::BAD_REQUEST, &msg, who),
    };
    let l = match load(&app, &id).await {
        Ok(l) => l,
        Err(e) => return op_error_page(&e, who),
    };
    let text = desired_text(&l);
    let editor = Editor {
        checked: device_view::check(&text, l.schema),
        text,
        running: l.running.clone(),
    };
    let notice = match (q.saved, q.sent.as_deref()) {
        (Some(v), _) => Some(format!(
            "Saved: version {v} is sent to the device. The configuration badge turns in_sync once the device applied it."
        )),
        (None, Some(a)) => Some(format!(
            "Command {} sent; its result appears under Commands.",
            a.replace('_', " ")
        )),
        (None, None) => None,
    };
    render(&actor, &l, range, editor, notice, StatusCode::OK)
}

/// `GET /devices/{id}/live`: the live part alone (htmx swaps it in every few seconds).
pub async fn live(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    let l = match load(&app, &id).await {
        Ok(l) => l,
        Err(e) => return op_error_page(&e, Some(&actor.principal)),
    };
    let p = DevicePage {
        device: &l.device,
        identity: l.identity.as_ref(),
        config: &l.config,
        latest: l.latest.as_ref(),
        peers: &l.peers,
        events: &l.events,
        commands: &l.commands,
        range: Range::Hour,
        editor: Editor {
            text: String::new(),
            checked: Checked::default(),
            running: Err(String::new()),
        },
        can_operate: false,
        notice: None,
        now_ms: crate::store::now_db(),
    };
    page(StatusCode::OK, device_page::live(&p))
}

/// `GET /devices/{id}/charts.json?range=`.
#[derive(Debug, Deserialize)]
pub struct ChartQuery {
    range: Option<String>,
}

/// `GET /devices/{id}/charts.json`: the chart data of a range, downsampled by the database
/// (see [`crate::store::Store::telemetry_series`]).
pub async fn charts(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Response {
    let range = match Range::parse(q.range.as_deref()) {
        Ok(r) => r,
        Err(msg) => return (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response(),
    };
    let now = crate::store::now_db();
    let samples = match app
        .ops
        .telemetry_series(&id, now - range.span_ms(), now, range.step_ms())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(device = %id, error = %e, "chart data failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "the chart data could not be read; see the fleet's log"})),
            )
                .into_response();
        }
    };
    let mut r = Json(device_view::chart(range, &samples, now)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The editor's form.
#[derive(Debug, Deserialize)]
pub struct ConfigForm {
    config: String,
}

/// `POST /devices/{id}/config/check`: the check of the editor's text (htmx, as you type).
pub async fn check(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<ConfigForm>,
) -> Response {
    let l = match load(&app, &id).await {
        Ok(l) => l,
        Err(e) => return op_error_page(&e, Some(&actor.principal)),
    };
    let checked = device_view::check(&f.config, l.schema);
    page(
        StatusCode::OK,
        device_page::config_check(&checked, &f.config, &l.running),
    )
}

/// `POST /devices/{id}/config`: saves the desired configuration (audited with before and
/// after by `ops::put_config`) and sends it; problems come back at their keys.
pub async fn save(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<ConfigForm>,
) -> Response {
    let who = Some(&actor.principal);
    let l = match load(&app, &id).await {
        Ok(l) => l,
        Err(e) => return op_error_page(&e, who),
    };
    let mut checked = device_view::check(&f.config, l.schema);
    if let (true, Some(doc)) = (checked.ok(), checked.doc.clone()) {
        match app
            .ops
            .put_config(&actor, ConfigScope::Device, &id, Value::Object(doc))
            .await
        {
            Ok(applied) => {
                let version = applied
                    .devices
                    .iter()
                    .find(|d| d.device == id)
                    .map_or(0, |d| d.version);
                return redirect(&format!("/devices/{}?saved={version}#config", encode(&id)));
            }
            // The fleet's own check (the same validator, and every device's schema).
            Err(OpError::InvalidConfig(problems)) => {
                let lines = device_view::key_lines(&f.config);
                checked.problems = problems
                    .into_iter()
                    .map(|p| {
                        let (key, message) = p
                            .split_once(": ")
                            .map_or(("config".to_owned(), p.clone()), |(k, m)| {
                                (k.to_owned(), m.to_owned())
                            });
                        KeyedProblem {
                            line: device_view::line_of(&lines, &key),
                            key,
                            message,
                        }
                    })
                    .collect();
            }
            Err(e) => return op_error_page(&e, who),
        }
    }
    let editor = Editor {
        text: f.config,
        checked,
        running: l.running.clone(),
    };
    render(
        &actor,
        &l,
        Range::Hour,
        editor,
        Some("Not saved: fix the problems shown at their keys, then save again.".into()),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
}

/// A command form.
#[derive(Debug, Deserialize)]
pub struct CommandForm {
    action: String,
    #[serde(default)]
    older_than_days: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    destination: String,
}

impl CommandForm {
    fn action(&self) -> Result<CommandAction, String> {
        Ok(match self.action.as_str() {
            "restart" => CommandAction::Restart,
            "retry_quarantine" => CommandAction::RetryQuarantine,
            "collect_diagnostics" => CommandAction::CollectDiagnostics,
            "retry_now" => CommandAction::RetryNow {
                destination: match self.destination.trim() {
                    "" => None,
                    d => Some(Token::new(d).map_err(|e| format!("destination: {e}"))?),
                },
            },
            "purge_quarantine" => {
                if self.confirm != "yes" {
                    return Err(
                        "purging deletes the quarantined objects from the appliance: tick the box to confirm".into(),
                    );
                }
                let older_than_secs = match self.older_than_days.trim() {
                    "" => None,
                    d => Some(
                        d.parse::<u64>()
                            .map_err(|_| {
                                format!("older than {d:?} days: give a whole number of days, or leave it empty")
                            })?
                            .saturating_mul(86_400),
                    ),
                };
                CommandAction::PurgeQuarantine { older_than_secs }
            }
            other => {
                return Err(format!(
                    "action {other:?} is not one of restart, retry_quarantine, purge_quarantine, collect_diagnostics, retry_now"
                ));
            }
        })
    }
}

/// `POST /devices/{id}/command`: sends a command (audited by `ops::create_command`).
pub async fn command(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<CommandForm>,
) -> Response {
    let who = Some(&actor.principal);
    let action = match f.action() {
        Ok(a) => a,
        Err(msg) => return error_page(StatusCode::BAD_REQUEST, &msg, who),
    };
    match app
        .ops
        .create_command(&actor, &id, action, Some(Duration::from_secs(24 * 3600)))
        .await
    {
        Ok(_) => redirect(&format!(
            "/devices/{}?sent={}#commands",
            encode(&id),
            encode(&f.action)
        )),
        Err(e) => op_error_page(&e, who),
    }
}

/// The approve form of a modality.
#[derive(Debug, Deserialize)]
pub struct PeerForm {
    calling_ae: String,
}

/// `POST /devices/{id}/peers/approve`: adds a calling AE to the device's allow-list (through
/// its desired configuration, audited by `ops::approve_peer`).
pub async fn approve_peer(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(f): Form<PeerForm>,
) -> Response {
    match app.ops.approve_peer(&actor, &id, &f.calling_ae).await {
        Ok(applied) => {
            let version = applied
                .devices
                .iter()
                .find(|d| d.device == id)
                .map_or(0, |d| d.version);
            redirect(&format!("/devices/{}?saved={version}#peers", encode(&id)))
        }
        Err(e) => op_error_page(&e, Some(&actor.principal)),
    }
}

/// 303 to a path of this console.
fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(action: &str, days: &str, confirm: &str) -> CommandForm {
        CommandForm {
            action: action.into(),
            older_than_days: days.into(),
            confirm: confirm.into(),
            destination: String::new(),
        }
    }

    #[test]
    fn command_forms_become_actions_and_a_purge_needs_its_confirmation() {
        assert_eq!(form("restart", "", "").action(), Ok(CommandAction::Restart));
        assert!(form("purge_quarantine", "", "").action().is_err());
        assert_eq!(
            form("purge_quarantine", "2", "yes").action(),
            Ok(CommandAction::PurgeQuarantine {
                older_than_secs: Some(172_800)
            })
        );
        assert_eq!(
            form("purge_quarantine", "", "yes").action(),
            Ok(CommandAction::PurgeQuarantine {
                older_than_secs: None
            })
        );
        assert!(form("purge_quarantine", "two", "yes").action().is_err());
        assert!(form("format_disk", "", "").action().is_err());
        assert_eq!(
            form("retry_now", "", "").action(),
            Ok(CommandAction::RetryNow { destination: None })
        );
    }
}
