//! `fleetpulse-agent run` collecting in Windows mode and in macOS mode on this Linux machine:
//! `collect.platform` picks the tool set at run time and stand-in tools on PATH
//! (`standin-tool`, see its doc) print real outputs (agent/tests/fixtures, tests/corpus) and
//! honour the agent's questions. The agent ships through the real collector into ClickHouse;
//! the tests assert exact rows, and that the event log cursors hold across a restart, a kill -9,
//! a rolled-over log and a cleared one (new records only, none twice).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::spawn_guarded;
use fleetpulse_tests::harness::{Fixture, poll_until};

const DM: &str = "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin";
const UDR: &str = "Microsoft-Windows-User Device Registration/Admin";
const AUTOPILOT: &str = "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// A directory of stand-in tools (`bin/`, symlinks to `standin-tool`) and their outputs
/// (`data/`).
struct Standin {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
}

impl Standin {
    fn new(tools: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(data.join("events")).unwrap();
        let exe = workspace_binary("standin-tool").unwrap();
        for tool in tools {
            std::os::unix::fs::symlink(&exe, bin.join(tool)).unwrap();
        }
        Self {
            _dir: dir,
            bin,
            data,
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.data.join(name), text).unwrap();
    }

    fn channel(&self, channel: &str) -> PathBuf {
        self.data
            .join("events")
            .join(format!("{}.xml", channel.replace(['/', ' '], "_")))
    }

    fn set_channel(&self, channel: &str, records: &str) {
        std::fs::write(self.channel(channel), records).unwrap();
    }

    fn append_channel(&self, channel: &str, record: &str) {
        let mut text = std::fs::read_to_string(self.channel(channel)).unwrap_or_default();
        text.push_str(record);
        self.set_channel(channel, &text);
    }

    /// The wevtutil record queries made so far on `channel` (the `/q:` argument).
    fn queries(&self, channel: &str) -> Vec<String> {
        std::fs::read_to_string(self.data.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let a: Vec<&str> = l.split('\t').collect();
                (a.len() == 5 && a[0] == "wevtutil" && a[2] == channel).then(|| a[4].to_owned())
            })
            .collect()
    }
}

/// A registered agent with its config file.
struct AgentSetup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup_agent(fixture: &Fixture, token: &str, collect: &str) -> AgentSetup {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let spool = dir.path().join("spool");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{}\"\nstate_file = \"{}\"\nspool_dir = \"{}\"\n[shipper]\nbatch_max_age_ms = 100\nheartbeat_interval_secs = 3600\n[sources]\npoll_interval_secs = 1\n[collect]\n{collect}\n",
            fixture.collector.grpc_url(),
            state.display(),
            spool.display()
        ),
    )
    .unwrap();
    let out = Command::new(workspace_binary("fleetpulse-agent").unwrap())
        .args(["register", "--config"])
        .arg(&config)
        .args([
            "--enrollment-token",
            token,
            "--device-id",
            "standin-device-1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "register: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    AgentSetup { _dir: dir, config }
}

fn start_agent(agent: &AgentSetup, standin: &Standin) -> Child {
    let path = format!(
        "{}:{}",
        standin.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
    command
        .args(["run", "--config"])
        .arg(&agent.config)
        .env("PATH", path)
        .env("FLEETPULSE_STANDIN_DIR", &standin.data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_guarded(command, "fleetpulse-agent run").unwrap()
}

async fn wait_for_count(fixture: &Fixture, condition: &str, expected: u64, what: &str) {
    poll_until(Duration::from_secs(60), what, || async {
        let n = fixture
            .count_where("enrollment_events", condition, &[])
            .await
            .map_err(|e| e.to_string())?;
        if n == expected {
            Ok(())
        } else {
            Err(format!("{n} rows, expected {expected}"))
        }
    })
    .await;
}

/// Waits until the agent asked wevtutil for `channel` records after `after`.
async fn wait_for_query(standin: &Standin, channel: &str, after: u64) {
    let wanted = format!("/q:*[System[EventRecordID>{after}]]");
    poll_until(
        Duration::from_secs(60),
        "the agent's next wevtutil query",
        || async {
            let queries = standin.queries(channel);
            if queries.contains(&wanted) {
                Ok(())
            } else {
                Err(format!("{wanted} not in {queries:?}"))
            }
        },
    )
    .await;
}

/// A copy of the first DM admin record with another record id and time (a new event).
fn new_dm_record(record_id: u64, second: u32) -> String {
    let text = read("agent/tests/fixtures/event_dm_admin_wevtutil.xml");
    let start = text.find("<Event ").unwrap();
    let end = text[start..].find("</Event>").unwrap() + start + "</Event>".len();
    let record = &text[start..end];
    let id_start = record.find("<EventRecordID>").unwrap() + "<EventRecordID>".len();
    let id_end = record[id_start..].find('<').unwrap() + id_start;
    let mut record = format!("{}{record_id}{}", &record[..id_start], &record[id_end..]);
    let t = record.find("SystemTime=\"").unwrap() + "SystemTime=\"".len();
    // Same day, another second: 2024-03-05T09:MM:SS.
    record.replace_range(
        t..t + 19,
        &format!("2024-03-05T09:{:02}:{:02}", second / 60, second % 60),
    );
    record + "\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_mode_collects_every_channel_with_cursors_that_survive_restarts_kills_and_clears() {
    // The fixtures are real outputs from 2024: keep them, and accept their age.
    let fixture = Fixture::start_with("agent_windows", |b| b.arg("--retention-days").arg("36500"))
        .await
        .unwrap();
    let token = fixture.collector.token_create("contoso").await.unwrap();
    let standin = Standin::new(&[
        "dsregcmd",
        "wevtutil",
        "reg",
        "tpmtool",
        "MdmDiagnosticsTool.exe",
    ]);
    standin.write(
        "dsregcmd.txt",
        &read("agent/tests/fixtures/dsregcmd_entra_joined.txt"),
    );
    standin.write(
        "reg.txt",
        &read("agent/tests/fixtures/registry_enrollments.txt"),
    );
    standin.write(
        "tpmtool.txt",
        &read("agent/tests/fixtures/tpmtool_getdeviceinformation.txt"),
    );
    standin.write(
        "mdmdiag.xml",
        &read("agent/tests/fixtures/mdm_diag_report.xml"),
    );
    standin.write(
        "reg-autopilot.txt",
        &read("tests/corpus/registry/bootstrap_script_provisioning_autopilot_unassigned.reg"),
    );
    // DM admin: 5 records (17320-17327), 4 of them enrollment events.
    standin.set_channel(
        DM,
        &read("agent/tests/fixtures/event_dm_admin_wevtutil.xml"),
    );
    // Device registration: event 304 (record 5120). Autopilot: 100 (record 28), 171 (96).
    standin.set_channel(
        UDR,
        &read("tests/corpus/event_log/learn_udr_304_join_phase.xml"),
    );
    standin.set_channel(
        AUTOPILOT,
        &(read("tests/corpus/event_log/evtx_baseline_autopilot_100_warning.xml")
            + &read("tests/corpus/event_log/learn_autopilot_171_tpm_identity.xml")),
    );
    let agent = setup_agent(&fixture, &token, "platform = \"windows\"");
    let mut child = start_agent(&agent, &standin);

    let from_logs = "source_kind = 'event_log'";
    wait_for_count(
        &fixture,
        from_logs,
        7,
        "the 7 enrollment events of the three channels",
    )
    .await;
    for (channel, n) in [(DM, 4), (UDR, 1), (AUTOPILOT, 2)] {
        let stored = fixture
            .count_where("enrollment_events", "source_channel = ?", &[channel])
            .await
            .unwrap();
        assert_eq!(stored, n, "{channel}");
    }
    // Snapshots: dsregcmd, registry, TPM and MDM diagnostics report states, with the Windows
    // platform.
    poll_until(Duration::from_secs(30), "device states", || async {
        let n = fixture
            .count_where("device_states", "platform = 'windows'", &[])
            .await
            .map_err(|e| e.to_string())?;
        let reports = fixture
            .count_where(
                "device_states",
                "has(attributes.key, 'mdm_diag.report') AND mdm_enrolled = 1",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let autopilot = fixture
            .count_where(
                "device_states",
                "has(attributes.key, 'autopilot.profile')",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        if n >= 4 && reports == 1 && autopilot >= 1 {
            Ok(())
        } else {
            Err(format!("{n} states"))
        }
    })
    .await;
    // The cursor: the next polls ask only for records after the newest one read.
    wait_for_query(&standin, DM, 17327).await;
    wait_for_query(&standin, UDR, 5120).await;
    wait_for_query(&standin, AUTOPILOT, 96).await;

    // A new record arrives: stored once.
    standin.append_channel(DM, &new_dm_record(17330, 1));
    wait_for_count(&fixture, from_logs, 8, "the new DM record").await;
    wait_for_query(&standin, DM, 17330).await;

    // Graceful restart: the cursor is where it was.
    let calls_before = standin.queries(DM).len();
    terminate(&mut child);
    let mut child = start_agent(&agent, &standin);
    poll_until(
        Duration::from_secs(30),
        "polls after the restart",
        || async {
            let q = standin.queries(DM);
            if q.len() > calls_before + 1 {
                Ok(())
            } else {
                Err(q.len())
            }
        },
    )
    .await;
    assert!(
        standin.queries(DM)[calls_before..]
            .iter()
            .all(|q| q == "/q:*[System[EventRecordID>17330]]"),
        "{:?}",
        &standin.queries(DM)[calls_before..]
    );

    // kill -9 while a new record is being collected: nothing lost, nothing twice.
    standin.append_channel(DM, &new_dm_record(17331, 2));
    wait_for_count(&fixture, from_logs, 9, "record 17331").await;
    child.kill().unwrap();
    let _ = child.wait();
    standin.append_channel(DM, &new_dm_record(17332, 3));
    let mut child = start_agent(&agent, &standin);
    wait_for_count(&fixture, from_logs, 10, "record 17332 after kill -9").await;
    wait_for_query(&standin, DM, 17332).await;

    // The log rolls over (full, oldest records overwritten): ids go on; 17333 was lost to
    // the wrap before the agent read it, 17334 and 17335 are new.
    standin.set_channel(DM, &(new_dm_record(17334, 5) + &new_dm_record(17335, 6)));
    wait_for_count(&fixture, from_logs, 12, "the records after the roll-over").await;
    wait_for_query(&standin, DM, 17335).await;

    // The log is cleared: record ids restart at 1; the agent reads it from the start.
    standin.set_channel(DM, &new_dm_record(1, 4));
    wait_for_count(
        &fixture,
        from_logs,
        13,
        "the first record of the cleared log",
    )
    .await;
    wait_for_query(&standin, DM, 1).await;
    // Nothing was stored twice (event ids are unique per row).
    let distinct = fixture
        .ch
        .count(
            &format!(
                "SELECT uniqExact(event_id) FROM {}.enrollment_events WHERE {from_logs}",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(distinct, 13);
    // The MDM diagnostics report is written at most once an hour (the default interval): once
    // in this whole run, restarts and the kill -9 included (the attempt time is in the spool).
    let reports = std::fs::read_to_string(standin.data.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("MdmDiagnosticsTool.exe\t-out\t"))
        .count();
    assert_eq!(reports, 1);
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macos_mode_collects_profiles_snapshots() {
    let fixture = Fixture::start("agent_macos").await.unwrap();
    let token = fixture.collector.token_create("contoso").await.unwrap();
    let standin = Standin::new(&["profiles"]);
    standin.write(
        "profiles-status.txt",
        &read("agent/tests/fixtures/macos_profiles_status.txt"),
    );
    standin.write(
        "profiles-show.txt",
        &read("agent/tests/fixtures/macos_profiles_dep.txt"),
    );
    let agent = setup_agent(
        &fixture,
        &token,
        "platform = \"macos\"\nprofiles = \"profiles\"",
    );
    let mut child = start_agent(&agent, &standin);
    poll_until(Duration::from_secs(60), "a macOS device state", || async {
        let n = fixture
            .count_where(
                "device_states",
                "platform = 'macos' AND mdm_enrolled = 1 AND mdm_url = 'https://example.com/mdm/ServerURL'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        if n >= 1 {
            Ok(())
        } else {
            Err(format!("{n} states"))
        }
    })
    .await;
    // Nothing from the Windows tool set in macOS mode.
    assert_eq!(fixture.count("enrollment_events").await.unwrap(), 0);
    let calls = std::fs::read_to_string(standin.data.join("calls.log")).unwrap();
    assert!(
        calls.lines().all(|l| l.starts_with("profiles\t")),
        "{calls}"
    );
    assert!(
        calls.contains("profiles\tstatus\t-type\tenrollment"),
        "{calls}"
    );
    terminate(&mut child);
}

/// SIGTERM, then wait: the agent's graceful stop.
fn terminate(child: &mut Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let _ = child.wait();
}
