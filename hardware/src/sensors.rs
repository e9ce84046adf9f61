//! Temperatures and fans from the kernel's hwmon class (`/sys/class/hwmon/hwmon*/`), and their
//! limits (sans-IO evaluation).

use serde::{Deserialize, Serialize};

use crate::sysfs::{SysRoot, SysfsError, parse_i64};

/// What a reading measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// Degrees Celsius.
    Temperature,
    /// Revolutions per minute.
    Fan,
}

/// One hwmon reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// The chip's `name` (`coretemp`, `nct6775`).
    pub chip: String,
    /// The sensor's label (`Package id 0`), or its attribute stem (`temp1`) without one.
    pub label: String,
    /// What it measures.
    pub kind: SensorKind,
    /// °C for temperatures, rpm for fans.
    pub value: f64,
    /// The chip's own critical temperature (`tempN_crit`), if any.
    pub critical: Option<f64>,
}

impl SensorReading {
    /// `chip/label`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.chip, self.label)
    }
}

/// The profile's `[sensors]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorLimits {
    /// A temperature above this (°C, 30-120) makes the appliance degraded.
    pub max_temperature_c: f64,
    /// A fan slower than this (rpm) makes the appliance degraded; omit on fanless boxes.
    #[serde(default)]
    pub min_fan_rpm: Option<u32>,
}

impl SensorLimits {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(30.0..=120.0).contains(&self.max_temperature_c) {
            p.push(format!(
                "sensors.max_temperature_c must be between 30 and 120 (got {})",
                self.max_temperature_c
            ));
        }
        if let Some(rpm) = self.min_fan_rpm {
            if !(1..=20_000).contains(&rpm) {
                p.push(format!(
                    "sensors.min_fan_rpm must be between 1 and 20000, or be left out on a fanless box (got {rpm})"
                ));
            }
        }
        p
    }
}

/// Parses a `tempN_*` attribute (millidegrees Celsius) into °C.
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    parse_i64(text).map(|m| m as f64 / 1000.0)
}

/// The alarms raised by readings against limits: one sentence each, saying what to check.
pub fn evaluate(readings: &[SensorReading], limits: &SensorLimits) -> Vec<String> {
    let mut alarms = Vec::new();
    for r in readings {
        match r.kind {
            SensorKind::Temperature => {
                let crit = r.critical.filter(|c| *c > 0.0);
                if crit.is_some_and(|c| r.value >= c) {
                    alarms.push(format!(
                        "temperature {} is {:.1} °C, at or above the chip's critical {:.1} °C; check cooling now",
                        r.id(),
                        r.value,
                        crit.unwrap_or_default()
                    ));
                } else if r.value > limits.max_temperature_c {
                    alarms.push(format!(
                        "temperature {} is {:.1} °C, above the profile's limit of {:.1} °C; check airflow and the room",
                        r.id(),
                        r.value,
                        limits.max_temperature_c
                    ));
                }
            }
            SensorKind::Fan => {
                if let Some(min) = limits.min_fan_rpm {
                    if r.value < f64::from(min) {
                        alarms.push(format!(
                            "fan {} turns at {:.0} rpm, below the profile's minimum of {min} rpm; check or replace the fan",
                            r.id(),
                            r.value
                        ));
                    }
                }
            }
        }
    }
    alarms
}

/// Reads every temperature and fan of `/sys/class/hwmon`. Inputs the chip refuses to read (a
/// sensor wired to nothing answers with an IO error) are skipped and listed as problems.
pub fn read_hwmon(root: &SysRoot) -> Result<(Vec<SensorReading>, Vec<String>), SysfsError> {
    let mut readings = Vec::new();
    let mut problems = Vec::new();
    for chip_dir in root.list("/sys/class/hwmon")? {
        let dir = format!("/sys/class/hwmon/{chip_dir}");
        let chip = root
            .read_optional(format!("{dir}/name"))
            .ok()
            .flatten()
            .unwrap_or_else(|| chip_dir.clone());
        for attr in root.list(&dir)? {
            let Some(stem) = attr.strip_suffix("_input") else {
                continue;
            };
            let kind = if stem.starts_with("temp") {
                SensorKind::Temperature
            } else if stem.starts_with("fan") {
                SensorKind::Fan
            } else {
                continue;
            };
            let raw = match root.read_trimmed(format!("{dir}/{attr}")) {
                Ok(raw) => raw,
                Err(e) => {
                    problems.push(format!("sensor {chip}/{stem} unreadable: {e}"));
                    continue;
                }
            };
            let value = match kind {
                SensorKind::Temperature => parse_millidegrees(&raw),
                SensorKind::Fan => parse_i64(&raw).map(|v| v as f64),
            };
            let Some(value) = value else {
                problems.push(format!("sensor {chip}/{stem} gave {raw:?}, not a number"));
                continue;
            };
            let label = root
                .read_optional(format!("{dir}/{stem}_label"))
                .ok()
                .flatten()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| stem.to_owned());
            let critical = match kind {
                SensorKind::Temperature => root
                    .read_optional(format!("{dir}/{stem}_crit"))
                    .ok()
                    .flatten()
                    .and_then(|c| parse_millidegrees(&c)),
                SensorKind::Fan => None,
            };
            readings.push(SensorReading {
                chip: chip.clone(),
                label,
                kind,
                value,
                critical,
            });
        }
    }
    Ok((readings, problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake;

    fn limits(fan: Option<u32>) -> SensorLimits {
        SensorLimits {
            max_temperature_c: 80.0,
            min_fan_rpm: fan,
        }
    }

    #[test]
    fn reads_a_fake_hwmon_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fake::file(r, "/sys/class/hwmon/hwmon0/name", "coretemp\n");
        fake::file(r, "/sys/class/hwmon/hwmon0/temp1_input", "45000\n");
        fake::file(r, "/sys/class/hwmon/hwmon0/temp1_label", "Package id 0\n");
        fake::file(r, "/sys/class/hwmon/hwmon0/temp1_crit", "100000\n");
        fake::file(r, "/sys/class/hwmon/hwmon0/temp2_input", "garbage\n");
        fake::file(r, "/sys/class/hwmon/hwmon1/name", "nct6775\n");
        fake::file(r, "/sys/class/hwmon/hwmon1/fan1_input", "2400\n");
        fake::file(r, "/sys/class/hwmon/hwmon1/in0_input", "1200\n"); // a voltage: ignored
        let (readings, problems) = read_hwmon(&SysRoot::new(r)).expect("read");
        assert_eq!(
            readings,
            vec![
                SensorReading {
                    chip: "coretemp".into(),
                    label: "Package id 0".into(),
                    kind: SensorKind::Temperature,
                    value: 45.0,
                    critical: Some(100.0),
                },
                SensorReading {
                    chip: "nct6775".into(),
                    label: "fan1".into(),
                    kind: SensorKind::Fan,
                    value: 2400.0,
                    critical: None,
                },
            ]
        );
        assert_eq!(
            problems,
            vec!["sensor coretemp/temp2 gave \"garbage\", not a number".to_owned()]
        );
        assert!(evaluate(&readings, &limits(Some(1000))).is_empty());
        // No hwmon at all (a VM): no readings, no error.
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(
            read_hwmon(&SysRoot::new(empty.path()))
                .expect("read")
                .0
                .is_empty()
        );
    }

    #[test]
    fn alarms_for_heat_and_slow_fans() {
        let t = |v: f64, crit: Option<f64>| SensorReading {
            chip: "c".into(),
            label: "t".into(),
            kind: SensorKind::Temperature,
            value: v,
            critical: crit,
        };
        let fan = SensorReading {
            chip: "f".into(),
            label: "fan1".into(),
            kind: SensorKind::Fan,
            value: 0.0,
            critical: None,
        };
        assert_eq!(
            evaluate(&[t(85.5, None)], &limits(None)),
            vec!["temperature c/t is 85.5 °C, above the profile's limit of 80.0 °C; check airflow and the room".to_owned()]
        );
        assert_eq!(
            evaluate(&[t(75.0, Some(70.0))], &limits(None)),
            vec!["temperature c/t is 75.0 °C, at or above the chip's critical 70.0 °C; check cooling now".to_owned()]
        );
        assert!(evaluate(std::slice::from_ref(&fan), &limits(None)).is_empty());
        assert_eq!(
            evaluate(&[fan], &limits(Some(800))),
            vec!["fan f/fan1 turns at 0 rpm, below the profile's minimum of 800 rpm; check or replace the fan".to_owned()]
        );
    }
}
