//! The agent driven end to end by a small synchronous shell: a real bundle file "on the fleet",
//! a download cut halfway and resumed from its offset, full verification, a real directory
//! slot, DICOM busy then idle, health probes, commit — and a new version that is not healthy,
//! rolled back by itself.

use medgate_bundle::Version;
use medgate_bundle::agent::{
    Action, Activity, Agent, Health, Input, Instruction, Mode, Policy, Refusal, Report, State,
};
use medgate_bundle::local::{committed, install_file, verify_file};
use medgate_bundle::slot::{DirBackend, SlotBackend};
use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

mod common;
use common::*;

struct Shell {
    w: World,
    slots: DirBackend,
    server: PathBuf,
    download: PathBuf,
    cut_at: Option<u64>,
    health: Health,
    downloads_from: Vec<u64>,
    reports: Vec<Report>,
    installing: Option<Version>,
}

impl Shell {
    fn run(&mut self, agent: &mut Agent, input: Input) -> R {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for action in agent.handle(self.w.now, input) {
                if let Some(next) = self.carry_out(action)? {
                    inputs.push_back(next);
                }
            }
        }
        Ok(())
    }

    fn carry_out(&mut self, action: Action) -> R<Option<Input>> {
        let now = self.w.now;
        Ok(match action {
            Action::Download { from } => {
                self.downloads_from.push(from);
                // Resume: keep the first `from` bytes, ask the "server" for the rest (Range).
                let mut out = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&self.download)?;
                out.set_len(from)?;
                out.seek(SeekFrom::End(0))?;
                let mut src = fs::File::open(&self.server)?;
                src.seek(SeekFrom::Start(from))?;
                let mut rest = Vec::new();
                src.read_to_end(&mut rest)?;
                if let Some(cut) = self.cut_at.take() {
                    let n = usize::try_from(cut - from)?;
                    out.write_all(&rest[..n])?;
                    Some(Input::DownloadStopped {
                        have: cut,
                        error: "connection reset by peer".into(),
                    })
                } else {
                    out.write_all(&rest)?;
                    Some(Input::DownloadComplete {
                        have: out.metadata()?.len(),
                    })
                }
            }
            Action::Verify => {
                let r = verify_file(
                    &self.download,
                    &self.w.trust,
                    &self.w.device,
                    now,
                    &mut |_| {},
                );
                Some(Input::Verified(
                    r.map(|m| m.version).map_err(|e| Refusal::from(&e)),
                ))
            }
            Action::DiscardDownload => {
                fs::remove_file(&self.download)?;
                None
            }
            Action::Install => {
                let r = install_file(
                    &self.download,
                    &self.w.trust,
                    &self.w.device,
                    now,
                    &mut self.slots,
                );
                self.installing = r.as_ref().ok().map(|m| m.version.clone());
                Some(Input::Installed(
                    r.map(|_| ()).map_err(|e| Refusal::from(&e)),
                ))
            }
            Action::Wait(_) => None,
            Action::Switch => {
                let v = self.installing.clone().ok_or("switch before install")?;
                let r = self
                    .slots
                    .switch(&v)
                    .map_err(|e| Refusal::new("switch_failed", e.to_string()));
                Some(Input::Switched(r))
            }
            Action::ProbeHealth => Some(Input::Health(self.health)),
            Action::Commit => {
                let r = self
                    .slots
                    .commit()
                    .map_err(|e| Refusal::new("commit_failed", e.to_string()));
                if r.is_ok() {
                    let meta = medgate_bundle::Unverified::open(
                        fs::File::open(&self.download)?,
                        u64::MAX,
                    )?
                    .claimed()
                    .clone();
                    committed(&mut self.w.trust, &meta);
                    self.w.device.installed = meta.version;
                }
                Some(Input::Committed(r))
            }
            Action::RollBack { .. } => {
                let r = self
                    .slots
                    .rollback()
                    .map_err(|e| Refusal::new("rollback_failed", e.to_string()));
                Some(Input::RolledBack(r))
            }
            Action::Report(r) => {
                self.reports.push(r);
                None
            }
        })
    }

    fn later(&mut self, agent: &mut Agent, secs: u64, input: Input) -> R {
        self.w.now = self.w.now.plus_secs(secs);
        self.run(agent, input)
    }

    fn publish(&mut self, version: &str, floor: Option<&str>) -> R<Instruction> {
        let mut meta = self.w.meta(version)?;
        meta.floor = floor.map(v);
        let file = self.w.file(
            &meta,
            &[
                (&self.w.vendor[0], medgate_bundle::Role::Vendor),
                (&self.w.vendor[2], medgate_bundle::Role::Vendor),
            ],
            &self.w.payload,
        )?;
        fs::write(&self.server, &file)?;
        Ok(Instruction {
            campaign: format!("rollout-{version}").parse()?,
            version: v(version),
            size: file.len() as u64,
            mode: Mode::Soft { give_up_at: None },
            window: None,
        })
    }
}

fn states(reports: &[Report]) -> Vec<(State, String)> {
    reports
        .iter()
        .map(|r| (r.state, r.detail.clone()))
        .collect()
}

#[test]
fn a_campaign_installs_waits_for_idle_dicom_commits_and_a_sick_version_rolls_back() -> R {
    let tmp = tempfile::tempdir()?;
    let w = World::new()?;
    let mut slots = DirBackend::open(tmp.path().join("slots"))?;
    // The device runs 1.0.0 from its slot.
    let mut first = slots.begin_install(&v("1.0.0"))?;
    first.write(b"the old binaries")?;
    slots.finish_install(first)?;
    slots.switch(&v("1.0.0"))?;
    let healthy = Health {
        echo: true,
        spool_writable: true,
        mqtt: true,
        archive: true,
    };
    let mut sh = Shell {
        w,
        slots,
        server: tmp.path().join("fleet.mgb"),
        download: tmp.path().join("download.mgb"),
        cut_at: None,
        health: healthy,
        downloads_from: Vec::new(),
        reports: Vec::new(),
        installing: None,
    };
    let mut agent = Agent::new(Policy::default());

    // 1.1.0: the download is cut at its middle, then resumes from there.
    let job = sh.publish("1.1.0", Some("1.1.0"))?;
    sh.cut_at = Some(job.size / 2);
    sh.run(
        &mut agent,
        Input::Activity(Activity {
            associations: 2,
            ..Activity::default()
        }),
    )?;
    sh.run(
        &mut agent,
        Input::Campaign {
            instruction: job.clone(),
            partial: 0,
        },
    )?;
    assert_eq!(agent.state(), Some(State::Downloading));
    sh.later(&mut agent, 5, Input::Tick)?;
    assert_eq!(
        sh.downloads_from,
        vec![0, job.size / 2],
        "resumed from where it stopped"
    );
    // Verified, installed into the inactive slot, and waiting: 2 associations are open.
    assert_eq!(agent.state(), Some(State::WaitingIdle));
    let s = sh.slots.status()?;
    assert_eq!(
        (s.active, s.installed),
        (Some(v("1.0.0")), vec![v("1.1.0")])
    );
    let last = sh.reports.last().ok_or("a report")?;
    assert_eq!(last.detail, "waiting for idle DICOM: 2 associations active");
    // A CT study keeps arriving after the associations closed.
    let arriving = medgate_bundle::agent::Arriving {
        modality: "CT".parse()?,
        last_object: sh.w.now,
        stable_age_secs: 40,
    };
    sh.later(
        &mut agent,
        1,
        Input::Activity(Activity {
            arriving: vec![arriving],
            ..Activity::default()
        }),
    )?;
    assert_eq!(
        sh.reports.last().map(|r| r.detail.as_str()),
        Some("waiting for idle DICOM: CT study arriving, quiet in 39 s")
    );
    assert_eq!(
        sh.slots.status()?.active,
        Some(v("1.0.0")),
        "nothing switched while DICOM is busy"
    );
    // Quiet: switch, two healthy probes, commit.
    sh.later(&mut agent, 40, Input::Activity(Activity::default()))?;
    assert_eq!(agent.state(), Some(State::Probing));
    sh.later(&mut agent, 5, Input::Tick)?;
    assert_eq!(agent.state(), Some(State::Installed));
    let s = sh.slots.status()?;
    assert_eq!((s.active, s.probation), (Some(v("1.1.0")), None));
    assert_eq!(
        sh.w.trust.floor(),
        Some(&v("1.1.0")),
        "the committed bundle's floor holds now"
    );
    let seen: Vec<State> = states(&sh.reports).into_iter().map(|(s, _)| s).collect();
    for expected in [
        State::Downloading,
        State::Verifying,
        State::Installing,
        State::WaitingIdle,
        State::Switching,
        State::Probing,
        State::Installed,
    ] {
        assert!(seen.contains(&expected), "{expected:?} reported: {seen:?}");
    }

    // 1.2.0 switches but its listener never answers C-ECHO: rolled back at the health deadline.
    sh.reports.clear();
    sh.health = Health {
        echo: false,
        ..healthy
    };
    let job = sh.publish("1.2.0", None)?;
    sh.later(
        &mut agent,
        1,
        Input::Campaign {
            instruction: job,
            partial: 0,
        },
    )?;
    sh.run(&mut agent, Input::Activity(Activity::default()))?;
    assert_eq!(agent.state(), Some(State::Probing));
    assert_eq!(sh.slots.status()?.active, Some(v("1.2.0")));
    for _ in 0..23 {
        sh.later(&mut agent, 5, Input::Tick)?;
    }
    assert_eq!(
        agent.state(),
        Some(State::Probing),
        "115 s: still within the deadline"
    );
    sh.later(&mut agent, 5, Input::Tick)?;
    assert_eq!(agent.state(), Some(State::RolledBack));
    let s = sh.slots.status()?;
    assert_eq!(
        (s.active, s.probation),
        (Some(v("1.1.0")), None),
        "back on the previous version"
    );
    let last = sh.reports.last().ok_or("a report")?;
    assert_eq!(last.code.as_deref(), Some("health_deadline"));
    assert_eq!(
        last.detail,
        "not healthy within 120 s of the switch: the listener did not answer C-ECHO"
    );

    // A tampered download is refused, discarded, and nothing is installed.
    sh.reports.clear();
    let job = sh.publish("1.3.0", None)?;
    let mut bytes = fs::read(&sh.server)?;
    let at = bytes.len() - 7;
    bytes[at] ^= 0xff;
    fs::write(&sh.server, &bytes)?;
    sh.later(
        &mut agent,
        1,
        Input::Campaign {
            instruction: job,
            partial: 0,
        },
    )?;
    assert_eq!(agent.state(), Some(State::Refused));
    assert!(
        sh.reports
            .last()
            .is_some_and(|r| r.code.as_deref() == Some("payload_digest_mismatch")
                && r.detail.starts_with("the payload's sha256 is "))
    );
    assert!(!sh.download.exists(), "the refused download is discarded");
    assert!(!sh.slots.status()?.installed.contains(&v("1.3.0")));
    assert_eq!(sh.slots.status()?.active, Some(v("1.1.0")));
    Ok(())
}
