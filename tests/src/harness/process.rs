//! Child processes that can never outlive the test process, and their orderly termination.
//!
//! Every server the harness starts is spawned with `PR_SET_PDEATHSIG = SIGKILL`, so a test
//! binary that panics, is killed by a timeout or by Ctrl-C leaves no orphaned ClickHouse,
//! PostgreSQL or collector behind. The kernel sends the parent-death signal when the *thread*
//! that forked the child exits, not the process; cargo runs each test on its own short-lived
//! thread, so all children are forked from one dedicated spawner thread that lives as long as
//! the process.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use super::HarnessError;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The spawner thread's request queue; the thread itself is never joined.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("fleetpulse-harness-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // If the requester is gone, the child still dies with the test process
                    // (parent-death signal), so a failed reply leaks nothing.
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the harness spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawns `command` so that the kernel SIGKILLs it when the test process dies.
pub fn spawn_guarded(mut command: Command, what: &str) -> Result<Child, HarnessError> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    {
        let sender = spawner().lock().map_err(|_| {
            HarnessError::Spawn(what.to_owned(), io::Error::other("spawner lock poisoned"))
        })?;
        sender.send((command, reply_tx)).map_err(|_| {
            HarnessError::Spawn(what.to_owned(), io::Error::other("spawner thread is gone"))
        })?;
    }
    reply_rx
        .recv()
        .map_err(|_| {
            HarnessError::Spawn(what.to_owned(), io::Error::other("spawner thread is gone"))
        })?
        .map_err(|e| HarnessError::Spawn(what.to_owned(), e))
}

/// Sends `signal` to the child unless it has already been reaped.
pub fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain syscall; a stale pid of an exited-but-unreaped child is still ours
    // (zombies keep their pid until waited for), so this cannot hit another process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Waits for the child to exit, polling until `timeout`. `None` when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within `grace`. Returns the exit status.
pub fn terminate(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    signal(child, libc::SIGTERM);
    if let Some(status) = wait_timeout(child, grace)? {
        return Ok(status);
    }
    signal(child, libc::SIGKILL);
    child.wait()
}

/// Finds a free loopback TCP port by binding port 0. The port is released before it is used,
/// so a caller must retry on "address in use" (another process may take it in between).
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::FreePort)?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::FreePort)?
        .port())
}

/// The last `max_bytes` of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path, max_bytes: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max_bytes);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`; `None` when
/// the process is gone or the platform has no procfs.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_millis(
        (utime + stime) * 1000 / ticks,
    ))
}

/// CPU time (user + system) of a process *and its descendants*: its own time, the time of its
/// children it has reaped (`cutime`, `cstime`) and that of every live descendant. For servers
/// that fork a process per connection (PostgreSQL's backends), whose own `/proc/<pid>/stat`
/// says almost nothing. `None` when the process is gone or the platform has no procfs.
pub fn tree_cpu_time(pid: u32) -> Option<std::time::Duration> {
    // (pid, ppid, utime + stime, cutime + cstime) of every process.
    let mut all: Vec<(u32, u32, u64, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(u), Some(s), Some(cu), Some(cs)) =
            (num(1), num(11), num(12), num(13), num(14))
        {
            all.push((p, u32::try_from(ppid).unwrap_or(0), u + s, cu + cs));
        }
    }
    let root = all.iter().find(|(p, ..)| *p == pid)?;
    let mut ticks = root.2 + root.3;
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, own, _) in &all {
            if *ppid == parent {
                ticks += own;
                frontier.push(*p);
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_millis(ticks * 1000 / hz))
}

/// Resident memory of a process from `/proc/<pid>/status`: (`VmRSS`, `VmHWM` = peak RSS), in
/// bytes; `None` when the process is gone or the platform has no procfs.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Raises the open-file limit (see [`fleetpulse_net::raise_fd_limit`]); a test or bench holding
/// thousands of connections calls it before starting the collector, which inherits it.
pub use fleetpulse_net::raise_fd_limit;
