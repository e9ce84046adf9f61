//! The campaign engine's rules, one test each: canary first, soak gating, the failure pause,
//! no other device touched after a canary rollback, resume, cancel, honest state, windows.

use super::*;

const T0: u64 = 1_800_000_000_000;
const SOAK_SECS: u64 = 600;

fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).expect("device id")
}

fn site(s: &str) -> SiteId {
    SiteId::new(s).expect("site id")
}

fn tok(s: &str) -> Token {
    Token::new(s).expect("token")
}

/// Canary devices in site `north`, the others in `south` (window 21:30 UTC, 2 h).
fn campaign(canary: &[&str], others: &[&str], shares: &[u8], threshold: u8) -> Campaign {
    let mut targets: Vec<(DeviceId, SiteId)> =
        canary.iter().map(|d| (dev(d), site("north"))).collect();
    targets.extend(others.iter().map(|d| (dev(d), site("south"))));
    let canary: Vec<DeviceId> = canary.iter().map(|d| dev(d)).collect();
    let devices = assign_waves(&targets, &canary, shares)
        .expect("plan")
        .into_iter()
        .map(|(d, s, w)| DeviceRecord::pending(d, s, w, T0))
        .collect();
    let mut windows = BTreeMap::new();
    windows.insert(
        site("south"),
        UtcWindow {
            start_minute: 1290,
            minutes: 120,
        },
    );
    Campaign {
        id: tok("cmp-1"),
        plan: Plan {
            bundle: BundleRef {
                sha256: Sha256Hex::new("ab".repeat(32)).expect("sha"),
                version: tok("1.4.0"),
                size: 1234,
                url: HttpsUrl::new(format!(
                    "https://fleet.example/device/v1/bundles/{}",
                    "ab".repeat(32)
                ))
                .expect("url"),
            },
            waves: u32::try_from(shares.len() + 1).expect("waves"),
            soak_secs: SOAK_SECS,
            failure_threshold_pct: threshold,
            mode: InstallMode::Soft,
            deadline_ms: Some(T0 + 86_400_000),
            windows,
        },
        state: CampaignState::Draft,
        paused_reason: None,
        released_waves: 0,
        acknowledged_failures: 0,
        devices,
    }
}

fn report(
    state: UpdatePhase,
    running: &str,
    on_probation: bool,
    code: Option<&str>,
) -> UpdateReport {
    UpdateReport {
        state,
        version: Some(tok("1.4.0")),
        running: Some(tok(running)),
        campaign: Some(tok("cmp-1")),
        on_probation,
        code: code.map(tok),
    }
}

fn healthy() -> Health {
    Health {
        forward_errors_milli_per_s: 10,
        forward_p99_ms: 800,
    }
}

fn feed(c: &mut Campaign, now: u64, device: &str, r: Option<UpdateReport>) -> Vec<Action> {
    feed_health(c, now, device, r, true, Some(healthy()))
}

fn feed_health(
    c: &mut Campaign,
    now: u64,
    device: &str,
    r: Option<UpdateReport>,
    online: bool,
    health: Option<Health>,
) -> Vec<Action> {
    c.handle(
        now,
        Input::Report {
            device: dev(device),
            report: r,
            online,
            last_seen_ms: Some(if online { now } else { T0 }),
            health,
        },
    )
    .expect("report")
}

fn offered(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Offer { device, .. } => Some(device.to_string()),
            _ => None,
        })
        .collect()
}

fn state_of(c: &Campaign, device: &str) -> (DeviceState, Option<FailKind>) {
    let d = c
        .devices
        .iter()
        .find(|d| d.device.as_str() == device)
        .expect("device in campaign");
    (d.state, d.fail)
}

/// Drives a device from offered to installed (committed, running the version) at `now`.
fn install(c: &mut Campaign, now: u64, device: &str) {
    feed(
        c,
        now,
        device,
        Some(report(UpdatePhase::Downloading, "1.3.0", false, None)),
    );
    feed(
        c,
        now,
        device,
        Some(report(UpdatePhase::Probing, "1.4.0", true, None)),
    );
    feed(
        c,
        now,
        device,
        Some(report(UpdatePhase::Installed, "1.4.0", false, None)),
    );
    assert_eq!(state_of(c, device), (DeviceState::Installed, None));
}

#[test]
fn waves_are_canaries_then_cumulative_shares() {
    let c = campaign(
        &["c1"],
        &["d1", "d2", "d3", "d4", "d5", "d6", "d7"],
        &[25, 100],
        10,
    );
    let waves: Vec<(String, u32)> = c
        .devices
        .iter()
        .map(|d| (d.device.to_string(), d.wave))
        .collect();
    // 7 non-canary devices: 25 % rounds up to 2, then the remaining 5.
    assert_eq!(
        waves,
        [
            ("c1", 0),
            ("d1", 1),
            ("d2", 1),
            ("d3", 2),
            ("d4", 2),
            ("d5", 2),
            ("d6", 2),
            ("d7", 2)
        ]
        .map(|(d, w)| (d.to_owned(), w))
        .to_vec()
    );
    let t = [(dev("a"), site("north"))];
    assert!(matches!(
        assign_waves(&t, &[], &[50, 40, 100]),
        Err(PlanError::Shares(_))
    ));
    assert!(matches!(
        assign_waves(&t, &[], &[50]),
        Err(PlanError::Shares(_))
    ));
    assert!(matches!(
        assign_waves(&t, &[], &[0, 100]),
        Err(PlanError::Shares(_))
    ));
    assert!(matches!(
        assign_waves(&t, &[dev("zz")], &[100]),
        Err(PlanError::CanaryNotTargeted(_))
    ));
    assert!(matches!(
        assign_waves(&[], &[], &[100]),
        Err(PlanError::NoTargets)
    ));
}

#[test]
fn a_draft_offers_nothing_and_approval_offers_the_canary_first() {
    let mut c = campaign(&["c1"], &["d1", "d2"], &[100], 10);
    assert!(c.handle(T0, Input::Tick).expect("tick").is_empty());
    // Reports to a draft change nothing.
    assert!(feed(&mut c, T0, "c1", None).is_empty());
    let a = c.handle(T0, Input::Approve).expect("approve");
    assert_eq!(offered(&a), ["c1"]);
    assert_eq!(c.state, CampaignState::Running);
    assert_eq!(state_of(&c, "c1"), (DeviceState::Offered, None));
    assert_eq!(state_of(&c, "d1"), (DeviceState::Pending, None));
    // The offer names the bundle, the mode, the deadline; the canary's site has no window.
    let Some(Action::Offer { offer, .. }) = a.first() else {
        panic!("first action is the offer: {a:?}");
    };
    assert_eq!(offer.version.as_str(), "1.4.0");
    assert_eq!(offer.size, 1234);
    assert_eq!(offer.mode, InstallMode::Soft);
    assert_eq!(offer.deadline_ms, Some(T0 + 86_400_000));
    assert_eq!(offer.window, None);
    assert!(c.handle(T0, Input::Approve).is_err(), "approved twice");
}

#[test]
fn the_next_wave_waits_for_the_soak() {
    let mut c = campaign(&["c1"], &["d1", "d2"], &[100], 10);
    c.handle(T0, Input::Approve).expect("approve");
    install(&mut c, T0 + 1000, "c1");
    // Installed is not healthy: nothing else is offered during the soak.
    let a = c
        .handle(T0 + 1000 + SOAK_SECS * 1000 - 1, Input::Tick)
        .expect("tick");
    assert!(offered(&a).is_empty(), "{a:?}");
    // Soak passed: healthy, and the next wave (south, with its window) is offered.
    let a = c
        .handle(T0 + 1000 + SOAK_SECS * 1000, Input::Tick)
        .expect("tick");
    assert_eq!(state_of(&c, "c1"), (DeviceState::Healthy, None));
    assert_eq!(offered(&a), ["d1", "d2"]);
    let windows: Vec<Option<UtcWindow>> = a
        .iter()
        .filter_map(|x| match x {
            Action::Offer { offer, .. } => Some(offer.window),
            _ => None,
        })
        .collect();
    assert!(
        windows
            .iter()
            .all(|w| w.is_some_and(|w| w.start_minute == 1290))
    );
}

#[test]
fn a_canary_rollback_pauses_and_touches_no_other_device() {
    let mut c = campaign(&["c1"], &["d1", "d2"], &[50, 100], 10);
    c.handle(T0, Input::Approve).expect("approve");
    feed(
        &mut c,
        T0,
        "c1",
        Some(report(UpdatePhase::Switching, "1.3.0", false, None)),
    );
    let a = feed(
        &mut c,
        T0 + 5000,
        "c1",
        Some(report(
            UpdatePhase::RolledBack,
            "1.3.0",
            false,
            Some("health_deadline"),
        )),
    );
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::RolledBack))
    );
    assert_eq!(c.state, CampaignState::Paused);
    let reason = "failure_threshold: 1 of 1 canary devices failed (rolled_back)";
    assert_eq!(c.paused_reason.as_deref(), Some(reason));
    assert!(
        a.contains(&Action::Paused {
            reason: reason.into()
        }),
        "{a:?}"
    );
    assert!(a.contains(&Action::DeviceChanged {
        device: dev("c1"),
        state: DeviceState::Failed,
        fail: Some(FailKind::RolledBack),
        code: Some(tok("health_deadline")),
    }));
    assert!(offered(&a).is_empty());
    // Time passes: still nothing for the others.
    for t in 1..20 {
        let a = c.handle(T0 + t * 3_600_000, Input::Tick).expect("tick");
        assert!(a.is_empty(), "{a:?}");
    }
    assert_eq!(state_of(&c, "d1"), (DeviceState::Pending, None));
    assert_eq!(state_of(&c, "d2"), (DeviceState::Pending, None));
}

#[test]
fn resume_goes_on_past_the_failures_it_acknowledged() {
    let mut c = campaign(&["c1", "c2"], &["d1", "d2"], &[100], 10);
    c.handle(T0, Input::Approve).expect("approve");
    feed(
        &mut c,
        T0,
        "c1",
        Some(report(
            UpdatePhase::Refused,
            "1.3.0",
            false,
            Some("bad_signature"),
        )),
    );
    assert_eq!(c.state, CampaignState::Paused);
    assert_eq!(
        c.paused_reason.as_deref(),
        Some("failure_threshold: 1 of 2 canary devices failed (refused)")
    );
    // Paused: c2 still goes on and is followed, but no new wave.
    install(&mut c, T0 + 1000, "c2");
    let a = c
        .handle(T0 + 1000 + SOAK_SECS * 1000, Input::Tick)
        .expect("tick");
    assert_eq!(state_of(&c, "c2"), (DeviceState::Healthy, None));
    assert!(offered(&a).is_empty());
    assert!(c.handle(T0, Input::Approve).is_err());
    let a = c.handle(T0 + 2_000_000, Input::Resume).expect("resume");
    assert_eq!(c.state, CampaignState::Running);
    assert_eq!(c.paused_reason, None);
    assert_eq!(offered(&a), ["d1", "d2"]);
    // A new failure counts again: 1 of 4 after the one acknowledged is past 10 %.
    feed(
        &mut c,
        T0 + 2_100_000,
        "d1",
        Some(report(UpdatePhase::Abandoned, "1.3.0", false, None)),
    );
    assert_eq!(c.state, CampaignState::Paused);
    assert_eq!(
        c.paused_reason.as_deref(),
        Some("failure_threshold: 2 of 4 devices failed (abandoned, refused)")
    );
}

#[test]
fn failures_within_the_threshold_complete() {
    let mut c = campaign(&[], &["d1", "d2", "d3", "d4"], &[100], 25);
    let a = c.handle(T0, Input::Approve).expect("approve");
    // No canary: the first share is offered at once.
    assert_eq!(offered(&a), ["d1", "d2", "d3", "d4"]);
    feed(
        &mut c,
        T0,
        "d1",
        Some(report(
            UpdatePhase::Failed,
            "1.3.0",
            false,
            Some("install_failed"),
        )),
    );
    assert_eq!(c.state, CampaignState::Running, "1 of 4 is within 25 %");
    for d in ["d2", "d3", "d4"] {
        install(&mut c, T0 + 1000, d);
    }
    let a = c
        .handle(T0 + 1000 + SOAK_SECS * 1000, Input::Tick)
        .expect("tick");
    assert!(a.contains(&Action::Completed), "{a:?}");
    assert_eq!(c.state, CampaignState::Completed);
    assert!(c.handle(T0, Input::Cancel).is_err(), "completed is over");
}

#[test]
fn honest_state_installed_but_running_another_version_is_failed() {
    let mut c = campaign(&["c1"], &[], &[100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    feed(
        &mut c,
        T0,
        "c1",
        Some(report(UpdatePhase::Installed, "1.3.0", false, None)),
    );
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::NotRunning))
    );

    // On probation is not installed.
    let mut c = campaign(&["c1"], &[], &[100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    feed(
        &mut c,
        T0,
        "c1",
        Some(report(UpdatePhase::Installed, "1.4.0", true, None)),
    );
    assert_eq!(state_of(&c, "c1"), (DeviceState::Probing, None));

    // Installed, then the running version changes back during the soak.
    let mut c = campaign(&["c1"], &[], &[100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    install(&mut c, T0, "c1");
    let mut back = report(UpdatePhase::Installed, "1.3.0", false, None);
    back.campaign = Some(tok("local-7"));
    back.version = Some(tok("1.3.0"));
    feed(&mut c, T0 + 1000, "c1", Some(back));
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::Reverted))
    );
    c.handle(T0 + SOAK_SECS * 2000, Input::Tick).expect("tick");
    assert_eq!(
        c.state,
        CampaignState::Completed,
        "within a 100 % threshold"
    );
    assert_eq!(state_of(&c, "c1").0, DeviceState::Failed, "never done");

    // A healthy device that later rolls back is failed too.
    let mut c = campaign(&["c1"], &["d1"], &[100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    install(&mut c, T0, "c1");
    c.handle(T0 + SOAK_SECS * 1000, Input::Tick).expect("tick");
    assert_eq!(state_of(&c, "c1").0, DeviceState::Healthy);
    feed(
        &mut c,
        T0 + SOAK_SECS * 1000 + 1,
        "c1",
        Some(report(UpdatePhase::RolledBack, "1.3.0", false, None)),
    );
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::RolledBack))
    );
}

#[test]
fn reports_of_other_campaigns_or_versions_do_not_move_a_device() {
    let mut c = campaign(&["c1"], &[], &[100], 10);
    c.handle(T0, Input::Approve).expect("approve");
    let mut other = report(UpdatePhase::RolledBack, "1.3.0", false, None);
    other.campaign = Some(tok("cmp-0"));
    assert!(feed(&mut c, T0, "c1", Some(other)).is_empty());
    let mut older = report(UpdatePhase::Installed, "1.3.0", false, None);
    older.version = Some(tok("1.3.0"));
    assert!(feed(&mut c, T0, "c1", Some(older)).is_empty());
    assert_eq!(state_of(&c, "c1"), (DeviceState::Offered, None));
    // The same report twice changes it once.
    let wait = report(
        UpdatePhase::WaitingIdle,
        "1.3.0",
        false,
        Some("associations_active"),
    );
    assert_eq!(feed(&mut c, T0, "c1", Some(wait.clone())).len(), 1);
    assert!(feed(&mut c, T0 + 5000, "c1", Some(wait)).is_empty());
    let d = &c.devices[0];
    assert_eq!(d.state, DeviceState::WaitingIdle);
    assert_eq!(
        d.code.as_ref().map(Token::as_str),
        Some("associations_active")
    );
    assert_eq!(d.since_ms, T0);
}

#[test]
fn unhealthy_during_the_soak_fails() {
    // Offline too long.
    let mut c = campaign(&["c1"], &[], &[100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    install(&mut c, T0, "c1");
    feed_health(&mut c, T0 + OFFLINE_LIMIT_MS - 1, "c1", None, false, None);
    assert_eq!(
        state_of(&c, "c1").0,
        DeviceState::Installed,
        "not too long yet"
    );
    feed_health(&mut c, T0 + OFFLINE_LIMIT_MS + 1, "c1", None, false, None);
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::Offline))
    );

    // Forwarding errors above the baseline (10 milli/s) + slack.
    let mut c = campaign(&["c1"], &[], &[100], 100);
    feed(&mut c, T0, "c1", None); // baseline from the telemetry before the offer
    c.handle(T0, Input::Approve).expect("approve");
    assert_eq!(c.devices[0].baseline, Some(healthy()));
    install(&mut c, T0, "c1");
    let ok = Health {
        forward_errors_milli_per_s: 10 + FORWARD_ERROR_SLACK,
        ..healthy()
    };
    feed_health(&mut c, T0 + 1, "c1", None, true, Some(ok));
    assert_eq!(state_of(&c, "c1").0, DeviceState::Installed);
    let bad = Health {
        forward_errors_milli_per_s: 11 + FORWARD_ERROR_SLACK,
        ..healthy()
    };
    feed_health(&mut c, T0 + 2, "c1", None, true, Some(bad));
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::ForwardErrors))
    );

    // Forward p99 worse than max(2 × 800, 800 + 1000) = 1800 ms.
    let mut c = campaign(&["c1"], &[], &[100], 100);
    feed(&mut c, T0, "c1", None);
    c.handle(T0, Input::Approve).expect("approve");
    install(&mut c, T0, "c1");
    let slow = |ms| Health {
        forward_p99_ms: ms,
        ..healthy()
    };
    feed_health(&mut c, T0 + 1, "c1", None, true, Some(slow(1800)));
    assert_eq!(state_of(&c, "c1").0, DeviceState::Installed);
    feed_health(&mut c, T0 + 2, "c1", None, true, Some(slow(1801)));
    assert_eq!(
        state_of(&c, "c1"),
        (DeviceState::Failed, Some(FailKind::ForwardDelay))
    );
}

#[test]
fn cancel_withdraws_what_is_not_installed() {
    let mut c = campaign(&[], &["d1", "d2", "d3", "d4"], &[75, 100], 100);
    c.handle(T0, Input::Approve).expect("approve");
    // d1 waits for idle, d2 is on probation, d3 just offered, d4 still pending.
    feed(
        &mut c,
        T0,
        "d1",
        Some(report(UpdatePhase::WaitingIdle, "1.3.0", false, None)),
    );
    feed(
        &mut c,
        T0,
        "d2",
        Some(report(UpdatePhase::Probing, "1.4.0", true, None)),
    );
    let a = c.handle(T0 + 1, Input::Cancel).expect("cancel");
    let withdrawn: Vec<String> = a
        .iter()
        .filter_map(|x| match x {
            Action::Withdraw { device } => Some(device.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(withdrawn, ["d1", "d3"]);
    assert_eq!(c.state, CampaignState::Cancelled);
    assert_eq!(state_of(&c, "d1").0, DeviceState::Withdrawn);
    assert_eq!(
        state_of(&c, "d2").0,
        DeviceState::Probing,
        "switched: not withdrawn"
    );
    assert_eq!(state_of(&c, "d3").0, DeviceState::Withdrawn);
    assert_eq!(state_of(&c, "d4").0, DeviceState::Withdrawn);
    // Nothing more happens.
    assert!(
        c.handle(T0 + 10_000_000, Input::Tick)
            .expect("tick")
            .is_empty()
    );
    assert!(
        feed(
            &mut c,
            T0,
            "d2",
            Some(report(UpdatePhase::Installed, "1.4.0", false, None))
        )
        .is_empty()
    );
    assert!(c.handle(T0, Input::Resume).is_err());
}

#[test]
fn manual_pause_offers_nothing_new_until_resumed() {
    let mut c = campaign(&["c1"], &["d1"], &[100], 10);
    assert!(
        c.handle(T0, Input::Pause).is_err(),
        "a draft does not pause"
    );
    c.handle(T0, Input::Approve).expect("approve");
    let a = c.handle(T0, Input::Pause).expect("pause");
    assert_eq!(
        a,
        [Action::Paused {
            reason: "paused by an operator".into()
        }]
    );
    install(&mut c, T0, "c1");
    let a = c.handle(T0 + SOAK_SECS * 1000, Input::Tick).expect("tick");
    assert_eq!(state_of(&c, "c1").0, DeviceState::Healthy);
    assert!(offered(&a).is_empty());
    let a = c
        .handle(T0 + SOAK_SECS * 1000, Input::Resume)
        .expect("resume");
    assert_eq!(offered(&a), ["d1"]);
    let e = c.handle(T0, Input::Resume).expect_err("running");
    assert!(
        e.to_string()
            .contains("cannot resume a campaign that is running"),
        "{e}"
    );
}

#[test]
fn offer_for_names_the_site_window() {
    let c = campaign(&["c1"], &["d1"], &[100], 10);
    assert_eq!(c.offer_for(&dev("c1")).and_then(|o| o.window), None);
    assert_eq!(
        c.offer_for(&dev("d1")).and_then(|o| o.window),
        Some(UtcWindow {
            start_minute: 1290,
            minutes: 120
        })
    );
    assert!(c.offer_for(&dev("nobody")).is_none());
}
