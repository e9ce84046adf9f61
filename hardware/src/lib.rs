//! What the Medgate appliance needs of its box.
//!
//! - [`watchdog`]: the hardware watchdog (`/dev/watchdog`, ioctls, magic close), systemd's
//!   watchdog, and the policy that pets both only while the listener and the spool are healthy;
//! - [`notify`]: systemd's notification protocol (`READY=1`, `WATCHDOG=1`, `STATUS=`);
//! - [`leds`]: status LEDs (booting, ok, degraded, fault, updating);
//! - [`sensors`]: hwmon temperatures and fans;
//! - [`storage`]: free space (`statvfs`), disks, SMART through `smartctl --json`;
//! - [`nics`]: interfaces and their roles (modality side, uplink);
//! - [`identity`]: DMI vendor, product, serial; TPM presence;
//! - [`profile`]: hardware profiles (`hardware/profiles/*.toml`), validated at start-up;
//! - [`inventory`]: all of it in one serializable struct (hardware only, no patient data).
//!
//! Decisions (which LED pattern, whether to pet, what is an alarm, parsing of sysfs values and
//! smartctl's JSON) are sans-IO; the IO is a thin layer over files below a configurable root
//! ([`SysRoot`]), `/` on the appliance and a temporary directory in tests.

pub mod identity;
pub mod inventory;
pub mod leds;
pub mod nics;
pub mod notify;
pub mod profile;
pub mod sensors;
pub mod storage;
pub mod sysfs;
pub mod watchdog;

pub use inventory::Inventory;
pub use leds::{ApplianceState, Leds, StateInputs};
pub use notify::SdNotify;
pub use profile::Profile;
pub use sysfs::SysRoot;
pub use watchdog::{HardwareWatchdog, Health, PetDecision, WatchdogPolicy, Watchdogs};
