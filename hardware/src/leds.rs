//! Status LEDs: which state the appliance is in, which LED pattern shows it (sans-IO), and the
//! writes to `/sys/class/leds/<name>/{trigger,brightness,delay_on,delay_off}`.

use serde::{Deserialize, Serialize};

use crate::sysfs::{SysRoot, SysfsError};
use crate::watchdog::Health;

/// The state the appliance shows on its LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplianceState {
    /// Starting: not yet receiving.
    Booting,
    /// Receiving and forwarding, nothing to report.
    Ok,
    /// Receiving, but something needs attention (uplink down, disk filling, hot, fan slow).
    Degraded,
    /// Not receiving: the listener or the spool is unhealthy.
    Fault,
    /// Installing an update.
    Updating,
}

impl ApplianceState {
    /// All states, in the profile's order.
    pub const ALL: [ApplianceState; 5] = [
        ApplianceState::Booting,
        ApplianceState::Ok,
        ApplianceState::Degraded,
        ApplianceState::Fault,
        ApplianceState::Updating,
    ];

    /// The state's name, as in the profile's `[leds]` table.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplianceState::Booting => "booting",
            ApplianceState::Ok => "ok",
            ApplianceState::Degraded => "degraded",
            ApplianceState::Fault => "fault",
            ApplianceState::Updating => "updating",
        }
    }

    /// Decides the state from what the appliance knows. Precedence: booting (not started yet),
    /// then fault (listener or spool down: a technician must see it even during an update), then
    /// updating, then degraded, then ok.
    pub fn decide(inputs: &StateInputs) -> Self {
        if !inputs.started {
            ApplianceState::Booting
        } else if !inputs.health.is_healthy() {
            ApplianceState::Fault
        } else if inputs.updating {
            ApplianceState::Updating
        } else if inputs.degraded {
            ApplianceState::Degraded
        } else {
            ApplianceState::Ok
        }
    }
}

/// What [`ApplianceState::decide`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateInputs {
    /// Start-up is over (listener bound, spool reconciled).
    pub started: bool,
    /// Listener and spool health.
    pub health: Health,
    /// An update is being installed.
    pub updating: bool,
    /// Something needs attention (see `Inventory::alarms`, uplink or archive unreachable).
    pub degraded: bool,
}

/// How an LED shows a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Steady light.
    On,
    /// One second on, one second off.
    BlinkSlow,
    /// 125 ms on, 125 ms off.
    BlinkFast,
}

impl LedPattern {
    /// Milliseconds on and off for the kernel's `timer` trigger; `None` for steady patterns.
    pub fn blink_timing(self) -> Option<(u32, u32)> {
        match self {
            LedPattern::BlinkSlow => Some((1000, 1000)),
            LedPattern::BlinkFast => Some((125, 125)),
            LedPattern::Off | LedPattern::On => None,
        }
    }
}

/// One state's LED in the profile: `ok = { led = "medgate:green:status", pattern = "on" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedSetting {
    /// The LED's name under `/sys/class/leds`.
    pub led: String,
    /// How it shows the state.
    pub pattern: LedPattern,
}

/// The profile's `[leds]` table: one LED setting per state (several states may share an LED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedMapping {
    /// While starting.
    pub booting: LedSetting,
    /// All well.
    pub ok: LedSetting,
    /// Needs attention.
    pub degraded: LedSetting,
    /// Not receiving.
    pub fault: LedSetting,
    /// Installing an update.
    pub updating: LedSetting,
}

impl LedMapping {
    /// The setting of a state.
    pub fn setting(&self, state: ApplianceState) -> &LedSetting {
        match state {
            ApplianceState::Booting => &self.booting,
            ApplianceState::Ok => &self.ok,
            ApplianceState::Degraded => &self.degraded,
            ApplianceState::Fault => &self.fault,
            ApplianceState::Updating => &self.updating,
        }
    }

    /// Every state with its setting, in [`ApplianceState::ALL`] order.
    pub fn entries(&self) -> impl Iterator<Item = (ApplianceState, &LedSetting)> {
        ApplianceState::ALL
            .into_iter()
            .map(|s| (s, self.setting(s)))
    }

    /// The distinct LED names used, in first-use order.
    pub fn leds(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (_, s) in self.entries() {
            if !names.contains(&s.led.as_str()) {
                names.push(&s.led);
            }
        }
        names
    }

    /// Problems of the names and patterns, for the profile's validation.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (state, s) in self.entries() {
            let bad = s.led.is_empty()
                || s.led.len() > 64
                || s.led.contains('/')
                || s.led == "."
                || s.led == ".."
                || s.led.chars().any(char::is_control);
            if bad {
                p.push(format!(
                    "leds.{}.led {:?} is not an LED name: 1-64 characters, no '/', not \".\" or \"..\"",
                    state.as_str(),
                    s.led
                ));
            }
        }
        if self.entries().all(|(_, s)| s.pattern == LedPattern::Off) {
            p.push("leds: every state is \"off\"; give at least one state a visible pattern, or remove [leds]".to_owned());
        }
        p
    }
}

/// One LED to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedCommand {
    /// The LED's name under `/sys/class/leds`.
    pub led: String,
    /// What to show.
    pub pattern: LedPattern,
}

/// The sans-IO part: remembers the state shown and says which LEDs to change for a new one.
#[derive(Debug, Clone)]
pub struct LedStateMachine {
    mapping: LedMapping,
    shown: Option<ApplianceState>,
}

impl LedStateMachine {
    /// Nothing shown yet.
    pub fn new(mapping: LedMapping) -> Self {
        Self {
            mapping,
            shown: None,
        }
    }

    /// The state currently shown.
    pub fn shown(&self) -> Option<ApplianceState> {
        self.shown
    }

    /// The commands that show `state`: its LED gets its pattern, every other LED of the mapping
    /// goes off. Empty when `state` is already shown. Call [`LedStateMachine::shown_now`] once
    /// they are applied.
    pub fn plan(&self, state: ApplianceState) -> Vec<LedCommand> {
        if self.shown == Some(state) {
            return Vec::new();
        }
        let target = self.mapping.setting(state);
        self.mapping
            .leds()
            .into_iter()
            .map(|led| LedCommand {
                led: led.to_owned(),
                pattern: if led == target.led {
                    target.pattern
                } else {
                    LedPattern::Off
                },
            })
            .collect()
    }

    /// Records that `state` is now shown.
    pub fn shown_now(&mut self, state: ApplianceState) {
        self.shown = Some(state);
    }
}

/// Parses a `trigger` attribute (`none [timer] heartbeat`): every trigger and the selected one.
pub fn parse_triggers(text: &str) -> (Vec<String>, Option<String>) {
    let mut all = Vec::new();
    let mut selected = None;
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(sel) => {
                selected = Some(sel.to_owned());
                all.push(sel.to_owned());
            }
            None => all.push(word.to_owned()),
        }
    }
    (all, selected)
}

/// A failed LED write.
#[derive(Debug, thiserror::Error)]
#[error(
    "setting LED {led:?} failed: {source}; the service needs write access to /sys/class/leds/{led} \
     (group medgate on its attributes, and ReadWritePaths= in the unit)"
)]
pub struct LedError {
    /// The LED.
    pub led: String,
    /// The failed file operation.
    #[source]
    pub source: SysfsError,
}

/// Writes one LED command under `root`. Blinking uses the kernel's `timer` trigger; an LED
/// without it shows steady light instead.
pub fn apply(root: &SysRoot, cmd: &LedCommand) -> Result<(), LedError> {
    let dir = format!("/sys/class/leds/{}", cmd.led);
    let err = |source| LedError {
        led: cmd.led.clone(),
        source,
    };
    let max = root
        .read_trimmed(format!("{dir}/max_brightness"))
        .map_err(err)?
        .parse::<u32>()
        .unwrap_or(1)
        .max(1);
    let timing = cmd.pattern.blink_timing();
    let has_timer = match timing {
        Some(_) => {
            let (triggers, _) =
                parse_triggers(&root.read_trimmed(format!("{dir}/trigger")).map_err(err)?);
            triggers.iter().any(|t| t == "timer")
        }
        None => false,
    };
    match (timing, has_timer) {
        (Some((on, off)), true) => {
            root.write(format!("{dir}/trigger"), "timer").map_err(err)?;
            // delay_on/delay_off appear (owned by root) only once the trigger is set, so udev
            // cannot hand them to the service: without write access the kernel's default
            // timer blink (500 ms on, 500 ms off) stays, which still blinks.
            let delays = root
                .write(format!("{dir}/delay_on"), &on.to_string())
                .and_then(|()| root.write(format!("{dir}/delay_off"), &off.to_string()));
            match delays {
                Ok(()) => {}
                Err(e) if e.source.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::debug!(led = %cmd.led, "no write access to the blink delays; keeping the kernel's default blink");
                }
                Err(e) => return Err(err(e)),
            }
        }
        _ => {
            if timing.is_some() {
                tracing::warn!(led = %cmd.led, "LED has no timer trigger; showing steady light instead of blinking");
            }
            let level = if cmd.pattern == LedPattern::Off {
                0
            } else {
                max
            };
            root.write(format!("{dir}/trigger"), "none").map_err(err)?;
            root.write(format!("{dir}/brightness"), &level.to_string())
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The LEDs of a box: the state machine plus the writes.
#[derive(Debug, Clone)]
pub struct Leds {
    root: SysRoot,
    machine: LedStateMachine,
}

impl Leds {
    /// LEDs under `root` as the profile's mapping names them.
    pub fn new(root: SysRoot, mapping: LedMapping) -> Self {
        Self {
            root,
            machine: LedStateMachine::new(mapping),
        }
    }

    /// Shows `state`. Returns whether anything was written; a failed write leaves the state
    /// "not shown" so the next call retries.
    pub fn show(&mut self, state: ApplianceState) -> Result<bool, LedError> {
        let commands = self.machine.plan(state);
        if commands.is_empty() {
            return Ok(false);
        }
        for cmd in &commands {
            apply(&self.root, cmd)?;
        }
        self.machine.shown_now(state);
        tracing::info!(state = state.as_str(), "status LEDs show new state");
        Ok(true)
    }

    /// The state currently shown.
    pub fn shown(&self) -> Option<ApplianceState> {
        self.machine.shown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    fn setting(led: &str, pattern: LedPattern) -> LedSetting {
        LedSetting {
            led: led.to_owned(),
            pattern,
        }
    }

    fn mapping() -> LedMapping {
        LedMapping {
            booting: setting("green", LedPattern::BlinkSlow),
            ok: setting("green", LedPattern::On),
            degraded: setting("amber", LedPattern::On),
            fault: setting("red", LedPattern::BlinkFast),
            updating: setting("amber", LedPattern::BlinkSlow),
        }
    }

    const HEALTHY: Health = Health {
        listener_ok: true,
        spool_ok: true,
    };

    #[test]
    fn state_precedence() {
        let mut i = StateInputs {
            started: false,
            health: Health {
                listener_ok: false,
                spool_ok: false,
            },
            updating: true,
            degraded: true,
        };
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Booting);
        i.started = true;
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Fault);
        i.health = Health {
            listener_ok: true,
            spool_ok: false,
        };
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Fault);
        i.health = HEALTHY;
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Updating);
        i.updating = false;
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Degraded);
        i.degraded = false;
        assert_eq!(ApplianceState::decide(&i), ApplianceState::Ok);
    }

    #[test]
    fn plan_lights_one_led_and_darkens_the_others() {
        let mut m = LedStateMachine::new(mapping());
        let plan = m.plan(ApplianceState::Fault);
        assert_eq!(
            plan,
            vec![
                LedCommand {
                    led: "green".into(),
                    pattern: LedPattern::Off
                },
                LedCommand {
                    led: "amber".into(),
                    pattern: LedPattern::Off
                },
                LedCommand {
                    led: "red".into(),
                    pattern: LedPattern::BlinkFast
                },
            ]
        );
        m.shown_now(ApplianceState::Fault);
        assert!(m.plan(ApplianceState::Fault).is_empty());
        let plan = m.plan(ApplianceState::Ok);
        assert_eq!(
            plan[0],
            LedCommand {
                led: "green".into(),
                pattern: LedPattern::On
            }
        );
        assert_eq!(plan[2].pattern, LedPattern::Off);
    }

    #[test]
    fn triggers_parse() {
        let (all, sel) = parse_triggers("none kbd-scrolllock [timer] heartbeat\n");
        assert_eq!(all, vec!["none", "kbd-scrolllock", "timer", "heartbeat"]);
        assert_eq!(sel.as_deref(), Some("timer"));
        assert_eq!(parse_triggers("none").1, None);
    }

    #[test]
    fn mapping_validation() {
        let mut m = mapping();
        m.fault.led = "../x".into();
        assert_eq!(
            m.problems(),
            vec!["leds.fault.led \"../x\" is not an LED name: 1-64 characters, no '/', not \".\" or \"..\"".to_owned()]
        );
    }

    fn led(root: &std::path::Path, name: &str, triggers: &str) {
        let d = format!("/sys/class/leds/{name}");
        fake::file(root, &format!("{d}/max_brightness"), "255\n");
        fake::file(root, &format!("{d}/brightness"), "0\n");
        fake::file(root, &format!("{d}/trigger"), triggers);
        fake::file(root, &format!("{d}/delay_on"), "");
        fake::file(root, &format!("{d}/delay_off"), "");
    }

    #[test]
    fn writes_a_fake_sys_class_leds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        led(r, "green", "[none] timer heartbeat\n");
        led(r, "amber", "[none] timer\n");
        led(r, "red", "[none] heartbeat\n"); // no timer: blinking falls back to steady
        let root = SysRoot::new(r);
        let read = |p: &str| root.read_trimmed(p).expect("read");
        let mut leds = Leds::new(root.clone(), mapping());

        assert!(leds.show(ApplianceState::Booting).expect("shown"));
        assert_eq!(read("/sys/class/leds/green/trigger"), "timer");
        assert_eq!(read("/sys/class/leds/green/delay_on"), "1000");
        assert_eq!(read("/sys/class/leds/amber/brightness"), "0");
        assert!(!leds.show(ApplianceState::Booting).expect("unchanged"));

        assert!(leds.show(ApplianceState::Ok).expect("shown"));
        assert_eq!(read("/sys/class/leds/green/trigger"), "none");
        assert_eq!(read("/sys/class/leds/green/brightness"), "255");

        assert!(leds.show(ApplianceState::Fault).expect("shown"));
        assert_eq!(read("/sys/class/leds/green/brightness"), "0");
        assert_eq!(read("/sys/class/leds/red/trigger"), "none");
        assert_eq!(read("/sys/class/leds/red/brightness"), "255");
        assert_eq!(leds.shown(), Some(ApplianceState::Fault));

        // A missing LED is a clear error, and the state is retried on the next call.
        std::fs::remove_dir_all(r.join("sys/class/leds/amber")).expect("rm");
        let err = leds
            .show(ApplianceState::Degraded)
            .expect_err("amber missing");
        assert!(
            err.to_string()
                .starts_with("setting LED \"amber\" failed: reading "),
            "{err}"
        );
        assert_eq!(leds.shown(), Some(ApplianceState::Fault));
        led(r, "amber", "[none] timer\n");
        assert!(leds.show(ApplianceState::Degraded).expect("retried"));
    }
}
