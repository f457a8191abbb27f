//! Footprint benchmark of the release agent (not a timed test: `#[ignore]`, run on demand and
//! recorded in BENCHMARKS.md):
//!
//! ```text
//! cargo build --release -p fleetpulse-agent && cargo build --workspace --bins
//! cargo test -p fleetpulse-tests --test agent_footprint -- --ignored --nocapture
//! ```
//!
//! Measures RSS (VmRSS sampled every second, and VmHWM) and CPU (utime+stime from
//! /proc/PID/stat) of `fleetpulse-agent run` while idle and while importing and shipping 100
//! events/s to the real collector, plus the binary size. Baseline in the same run: `tail -f`
//! following the same import file (the cheapest possible "file follower").
//! `FLEETPULSE_AGENT_BIN` overrides the agent binary (default `target/release/fleetpulse-agent`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetpulse_tests::harness::process::{signal, spawn_guarded};
use fleetpulse_tests::harness::{Fixture, poll_eq};

fn release_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("FLEETPULSE_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/agent_footprint-... -> target/release/fleetpulse-agent
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .unwrap();
    target.join("release").join("fleetpulse-agent")
}

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    rss_kib_max: u64,
    rss_kib_last: u64,
    hwm_kib: u64,
    cpu_percent: f64,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

/// Samples `pid` every second for `window`, running `tick` once per second.
async fn measure(pid: u32, window: Duration, mut tick: impl FnMut(u64)) -> Sample {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let start_ticks = cpu_ticks(pid);
    let began = Instant::now();
    let mut sample = Sample::default();
    let mut second = 0;
    while began.elapsed() < window {
        tick(second);
        second += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = status_kib(pid, "VmRSS:");
        sample.rss_kib_max = sample.rss_kib_max.max(rss);
        sample.rss_kib_last = rss;
    }
    sample.hwm_kib = status_kib(pid, "VmHWM:");
    sample.cpu_percent =
        (cpu_ticks(pid) - start_ticks) as f64 / hz / began.elapsed().as_secs_f64() * 100.0;
    sample
}

fn line(n: u64) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    format!(
        concat!(
            "{{\"eventId\":\"00000000-0000-4000-8000-{:012}\",\"deviceId\":\"dev-{}\",\"occurredAt\":\"{}\",",
            "\"platform\":\"PLATFORM_WINDOWS\",\"osEdition\":\"Windows 11 Pro\",\"osVersion\":\"10.0.22631.4602\",",
            "\"enrollmentMethod\":\"ENROLLMENT_METHOD_ENTRA_JOIN\",\"stage\":\"ENROLLMENT_STAGE_COMPLETE\",",
            "\"outcome\":\"OUTCOME_FAILED\",\"error\":{{\"code\":2149056536,\"hasCode\":true,",
            "\"symbol\":\"MENROLL_E_USERLICENSE\",\"message\":\"Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x80180018)\"}},",
            "\"userPrincipalName\":\"user{}@contoso.example\"}}\n"
        ),
        n,
        n % 500,
        rfc3339(at),
        n % 300
    )
}

fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn kill(mut child: Child) {
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture after a release build"]
async fn agent_footprint_idle_and_at_100_events_per_second() {
    let bin = release_agent();
    let size = std::fs::metadata(&bin)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release -p fleetpulse-agent)",
                bin.display()
            )
        })
        .len();
    let fixture = Fixture::start("agent_footprint").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let import = dir.path().join("import");
    std::fs::create_dir(&import).unwrap();
    let feed = import.join("feed.ndjson");
    std::fs::write(&feed, "").unwrap();
    let token = fixture.collector.token_create("bench").await.unwrap();
    let common = |cmd: &mut Command| {
        cmd.arg("--collector")
            .arg(fixture.collector.grpc_url())
            .arg("--state-file")
            .arg(dir.path().join("state.json"))
            .arg("--spool-dir")
            .arg(dir.path().join("spool"));
    };
    let mut register = Command::new(&bin);
    register.args(["register", "--enrollment-token", &token]);
    common(&mut register);
    assert!(register.status().unwrap().success());

    let mut run = Command::new(&bin);
    run.args([
        "run",
        "--poll-interval-secs",
        "1",
        "--heartbeat-interval-secs",
        "60",
        "--import-ndjson",
    ])
    .arg(&import);
    common(&mut run);
    run.stdout(Stdio::null()).stderr(Stdio::null());
    let agent = spawn_guarded(run, "fleetpulse-agent").unwrap();
    let mut tail = Command::new("tail");
    tail.args(["-F", "-n", "0"])
        .arg(&feed)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let tail = spawn_guarded(tail, "tail").unwrap();
    let (agent_pid, tail_pid) = (agent.id(), tail.id());
    poll_eq(Duration::from_secs(30), "first heartbeat", 1, || async {
        fixture.count("agent_heartbeats").await
    })
    .await;

    let idle = measure(agent_pid, Duration::from_secs(30), |_| {}).await;
    let tail_idle = Sample {
        rss_kib_last: status_kib(tail_pid, "VmRSS:"),
        ..Sample::default()
    };

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&feed)
        .unwrap();
    let mut written = 0u64;
    let load_window = Duration::from_secs(60);
    let tail_start = cpu_ticks(tail_pid);
    let load = measure(agent_pid, load_window, |_| {
        let mut chunk = String::new();
        for _ in 0..100 {
            chunk.push_str(&line(written));
            written += 1;
        }
        file.write_all(chunk.as_bytes()).unwrap();
    })
    .await;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let tail_cpu =
        (cpu_ticks(tail_pid) - tail_start) as f64 / hz / load_window.as_secs_f64() * 100.0;
    let tail_rss = status_kib(tail_pid, "VmRSS:");
    poll_eq(
        Duration::from_secs(60),
        "every event stored",
        written,
        || async { fixture.count("enrollment_events").await },
    )
    .await;
    kill(agent);
    kill(tail);

    println!(
        "agent binary: {} ({} bytes, {:.1} MiB)",
        bin.display(),
        size,
        size as f64 / 1048576.0
    );
    println!(
        "| phase | agent RSS last / max (MiB) | agent VmHWM (MiB) | agent CPU % of one core | tail -F RSS (MiB) | tail -F CPU % |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| idle 30 s | {:.1} / {:.1} | {:.1} | {:.2} | {:.1} | - |",
        idle.rss_kib_last as f64 / 1024.0,
        idle.rss_kib_max as f64 / 1024.0,
        idle.hwm_kib as f64 / 1024.0,
        idle.cpu_percent,
        tail_idle.rss_kib_last as f64 / 1024.0
    );
    println!(
        "| 100 events/s for 60 s ({written} events, all stored) | {:.1} / {:.1} | {:.1} | {:.2} | {:.1} | {:.2} |",
        load.rss_kib_last as f64 / 1024.0,
        load.rss_kib_max as f64 / 1024.0,
        load.hwm_kib as f64 / 1024.0,
        load.cpu_percent,
        tail_rss as f64 / 1024.0,
        tail_cpu
    );
}
