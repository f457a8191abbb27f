//! A real ClickHouse cluster on loopback: a private ZooKeeper (Debian's `zookeeperd` jars, run
//! as our own process with its own data dir and port, never the system service) and four
//! `clickhouse-server` processes, 2 shards x 2 replicas, in one `remote_servers` cluster with
//! `internal_replication`, `{shard}`/`{replica}` macros and distributed DDL.
//!
//! Servers are stopped before ZooKeeper (a server whose ZooKeeper is gone may take long to
//! stop), in parallel, and SIGKILLed after a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::HarnessError;
use super::clickhouse::{ClickHouseServer, remove_elements_with_attributes};
use super::process::{free_port, log_tail, spawn_guarded, terminate};

/// The cluster's name in `remote_servers` (what `--clickhouse-cluster` names).
pub const CLUSTER_NAME: &str = "fleetpulse_2x2";
/// Classpath of Debian's ZooKeeper 3.8 (`zookeeperd`): its jars, their dependencies and the
/// packaged log4j configuration.
const ZOOKEEPER_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/zookeeper-jute.jar:/usr/share/java/*:/etc/zookeeper/conf";
const ZOOKEEPER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private ZooKeeper server.
pub struct ZooKeeper {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Starts ZooKeeper on a free loopback port; returns once it answers `ruok` with `imok`.
    pub fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-zookeeper-")
            .tempdir()
            .map_err(|e| HarnessError::io("create ZooKeeper temp dir", e))?;
        let port = free_port()?;
        let config = format!(
            "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok\nmaxClientCnxns=0\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("zoo.cfg"), config)
            .map_err(|e| HarnessError::io("write zoo.cfg", e))?;
        let mut zk = Self {
            dir,
            port,
            child: None,
        };
        zk.start_again()?;
        Ok(zk)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a stopped ZooKeeper again on the same port and data.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::File::create(self.dir.path().join("zookeeper.log"))
            .map_err(|e| HarnessError::io("create ZooKeeper log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("clone ZooKeeper log", e))?;
        let mut command = Command::new("java");
        command
            .args([
                "-Xmx256m",
                "-cp",
                ZOOKEEPER_CLASSPATH,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.path().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = spawn_guarded(
            command,
            "java for ZooKeeper (install zookeeperd: deploy/install-deps.sh)",
        )?;
        let deadline = Instant::now() + ZOOKEEPER_START_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| HarnessError::io("wait for ZooKeeper", e))?
            {
                return Err(HarnessError::Start(
                    "ZooKeeper".into(),
                    format!(
                        "exited with {status}; log:\n{}",
                        log_tail(&self.dir.path().join("zookeeper.log"), 3000)
                    ),
                ));
            }
            if ruok(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = terminate(&mut child, Duration::from_secs(5));
                return Err(HarnessError::Start(
                    "ZooKeeper".into(),
                    format!(
                        "no imok within {ZOOKEEPER_START_TIMEOUT:?}; log:\n{}",
                        log_tail(&self.dir.path().join("zookeeper.log"), 3000)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops ZooKeeper (SIGTERM, SIGKILL after 10 s); data stays for [`Self::start_again`].
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10))
                .map_err(|e| HarnessError::io("stop ZooKeeper", e))?;
        }
        Ok(())
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `ruok` -> `imok` over ZooKeeper's four-letter-word interface.
fn ruok(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer == "imok"
}

/// Ports of one cluster node.
#[derive(Clone, Copy)]
struct NodePorts {
    http: u16,
    tcp: u16,
    interserver: u16,
}

/// ZooKeeper plus 2 shards x 2 replicas of `clickhouse-server`.
pub struct Cluster {
    /// `nodes[0]` = shard 1 replica 1, `[1]` = shard 1 replica 2, `[2]` = shard 2 replica 1,
    /// `[3]` = shard 2 replica 2. Declared before `zookeeper`: dropped (stopped) first.
    nodes: Vec<ClickHouseServer>,
    zookeeper: Mutex<ZooKeeper>,
}

static SHARED_CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster shared by the tests of one test binary (started on first use, stopped and
/// removed when the process exits). Tests must use their own databases; a test that stops a
/// node or ZooKeeper must keep the others out while it does (the cluster suite runs its cases
/// one at a time).
///
/// # Panics
/// When the cluster cannot be started (every test needing it would fail anyway).
pub fn shared_cluster() -> &'static Cluster {
    SHARED_CLUSTER.get_or_init(|| {
        let cluster =
            Cluster::start().unwrap_or_else(|e| panic!("cannot start the ClickHouse cluster: {e}"));
        // SAFETY: registering a plain `extern "C"` function; it only touches SHARED_CLUSTER.
        unsafe {
            libc::atexit(stop_shared_cluster_at_exit);
        }
        cluster
    })
}

/// Stops the shared cluster and deletes its data directories: statics are never dropped, so
/// without this every run of the suite left ~100 MB per server and ZooKeeper's data in /tmp.
extern "C" fn stop_shared_cluster_at_exit() {
    if let Some(cluster) = SHARED_CLUSTER.get() {
        cluster.shutdown();
        for node in &cluster.nodes {
            node.stop_and_remove();
        }
        if let Some(dir) = cluster.zookeeper_dir() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Cluster {
    /// Starts ZooKeeper and the four servers; returns once every server answers and sees the
    /// cluster in `system.clusters`.
    pub fn start() -> Result<Self, HarnessError> {
        let zookeeper = ZooKeeper::start()?;
        let mut ports = Vec::new();
        let mut taken = std::collections::HashSet::new();
        while ports.len() < 4 {
            let p = NodePorts {
                http: free_port()?,
                tcp: free_port()?,
                interserver: free_port()?,
            };
            if [p.http, p.tcp, p.interserver]
                .iter()
                .all(|port| taken.insert(*port))
                && p.http != p.tcp
                && p.tcp != p.interserver
                && p.http != p.interserver
            {
                ports.push(p);
            }
        }
        let remote_servers = remote_servers(&ports);
        let zk_port = zookeeper.port();
        let nodes = std::thread::scope(|scope| {
            let handles: Vec<_> = ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let remote_servers = remote_servers.clone();
                    let p = *p;
                    scope.spawn(move || {
                        let (shard, replica) = (i / 2 + 1, i % 2 + 1);
                        let edit = move |config: String| {
                            node_config(config, &remote_servers, zk_port, shard, replica, p)
                        };
                        ClickHouseServer::start_configured(p.http, p.tcp, &edit)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(HarnessError::Start(
                            "clickhouse-server".into(),
                            "starter thread panicked".into(),
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Self {
            nodes,
            zookeeper: Mutex::new(zookeeper),
        })
    }

    /// The cluster's name for `--clickhouse-cluster`.
    pub fn name(&self) -> &'static str {
        CLUSTER_NAME
    }

    /// Shard `shard` (1 or 2), replica `replica` (1 or 2).
    pub fn node(&self, shard: usize, replica: usize) -> &ClickHouseServer {
        &self.nodes[(shard - 1) * 2 + (replica - 1)]
    }

    /// All four servers: s1r1, s1r2, s2r1, s2r2.
    pub fn nodes(&self) -> &[ClickHouseServer] {
        &self.nodes
    }

    /// Stops ZooKeeper (the servers keep running, their replicated tables go read-only).
    pub fn stop_zookeeper(&self) -> Result<(), HarnessError> {
        self.lock_zookeeper()?.stop()
    }

    /// Starts ZooKeeper again on the same port and data.
    pub fn start_zookeeper(&self) -> Result<(), HarnessError> {
        self.lock_zookeeper()?.start_again()
    }

    fn lock_zookeeper(&self) -> Result<std::sync::MutexGuard<'_, ZooKeeper>, HarnessError> {
        self.zookeeper
            .lock()
            .map_err(|_| HarnessError::Start("ZooKeeper".into(), "state lock poisoned".into()))
    }

    /// Starts whatever an earlier (failed) test left stopped: ZooKeeper, then every server.
    pub fn ensure_running(&self) -> Result<(), HarnessError> {
        self.start_zookeeper()?;
        for node in &self.nodes {
            node.start()?;
        }
        Ok(())
    }

    /// Stops every server (in parallel), then ZooKeeper.
    pub fn shutdown(&self) {
        std::thread::scope(|scope| {
            for node in &self.nodes {
                scope.spawn(move || {
                    let _ = node.stop();
                });
            }
        });
        if let Ok(mut zk) = self.zookeeper.try_lock() {
            let _ = zk.stop();
        }
    }

    /// ZooKeeper's process id while it runs (for CPU accounting in benchmarks).
    pub fn zookeeper_pid(&self) -> Option<u32> {
        self.zookeeper
            .try_lock()
            .ok()
            .and_then(|z| z.child.as_ref().map(Child::id))
    }

    /// The data directory of ZooKeeper (for failure messages).
    pub fn zookeeper_dir(&self) -> Option<PathBuf> {
        self.zookeeper
            .try_lock()
            .ok()
            .map(|z| z.dir.path().to_path_buf())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn remote_servers(ports: &[NodePorts]) -> String {
    let mut xml = format!("<remote_servers><{CLUSTER_NAME}>");
    for shard in ports.chunks(2) {
        xml.push_str("<shard><internal_replication>true</internal_replication>");
        for p in shard {
            xml.push_str(&format!(
                "<replica><host>127.0.0.1</host><port>{}</port></replica>",
                p.tcp
            ));
        }
        xml.push_str("</shard>");
    }
    xml.push_str(&format!("</{CLUSTER_NAME}></remote_servers>"));
    xml
}

/// The test template of one node, turned into a cluster member: its interserver port, the
/// cluster, ZooKeeper, its macros and distributed DDL (the template's `incl=` sections are
/// replaced, not added to).
fn node_config(
    config: String,
    remote_servers: &str,
    zk_port: u16,
    shard: usize,
    replica: usize,
    ports: NodePorts,
) -> String {
    let mut config = config;
    for tag in [
        "remote_servers",
        "zookeeper",
        "macros",
        "distributed_ddl",
        "interserver_http_host",
        "interserver_http_port",
    ] {
        config = remove_elements_with_attributes(&config, tag);
    }
    let extra = format!(
        "<interserver_http_host>127.0.0.1</interserver_http_host>\
         <interserver_http_port>{interserver}</interserver_http_port>\
         {remote_servers}\
         <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node>\
         <session_timeout_ms>5000</session_timeout_ms></zookeeper>\
         <macros><shard>{shard}</shard><replica>s{shard}r{replica}</replica></macros>\
         <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>",
        interserver = ports.interserver,
    );
    match config.rfind("</yandex>") {
        Some(i) => {
            config.insert_str(i, &extra);
            config
        }
        None => config.replace("</clickhouse>", &format!("{extra}</clickhouse>")),
    }
}
