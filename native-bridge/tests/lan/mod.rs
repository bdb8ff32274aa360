//! A private LAN of network namespaces for the bridge tests: `N` "machines" (`<prefix>-1` …)
//! on one switch (a Linux bridge in `<prefix>-sw`), addresses `10.<net>.0.i/24`, multicast on.
//! Nothing touches the host's interfaces; everything is removed on drop (processes killed
//! first). Needs root, as CI has.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);
static NEXT_LOG: AtomicU32 = AtomicU32::new(0);

/// LAN tests run one at a time: the machine has two cores.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the `ip` command (iproute2) is needed");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

pub(crate) fn bridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kathon-bridge")
}

pub(crate) struct Lan {
    pub(crate) prefix: String,
    pub(crate) net: u8,
    pub(crate) n: usize,
    pub(crate) dir: PathBuf,
    children: Arc<Mutex<Vec<u32>>>,
}

impl Lan {
    pub(crate) fn up(n: usize) -> Lan {
        let seq = NEXT_LAN.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let prefix = format!("k{pid}{}", char::from(b'a' + u8::try_from(seq % 26).unwrap()));
        let net = u8::try_from(100 + (pid + seq) % 100).unwrap();
        let dir = std::env::temp_dir().join(format!("kathon-lan-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lan = Lan { prefix: prefix.clone(), net, n, dir, children: Arc::default() };
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = lan.ns(i);
            let (host_end, switch_end) = (format!("{prefix}h{i}"), format!("{prefix}s{i}"));
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &switch_end]);
            ip(&["link", "set", &host_end, "netns", &ns]);
            ip(&["link", "set", &switch_end, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &switch_end, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &switch_end, "up"]);
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ])
                .output();
            ip(&["-n", &ns, "link", "set", &host_end, "name", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lan.addr(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"]);
        }
        lan
    }

    pub(crate) fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub(crate) fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, u8::try_from(i).unwrap())
    }

    /// A data directory for machine `i`.
    pub(crate) fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("data-{i}"))
    }

    /// `kathon-bridge` on machine `i` with machine `i`'s data directory.
    pub(crate) fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), bridge_bin(), "--no-autostart", "--json", "--data-dir"])
            .arg(self.data_dir(i))
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub(crate) fn cli_json(&self, i: usize, args: &[&str]) -> serde_json::Value {
        let out = self.cli(i, args).unwrap_or_else(|e| panic!("kathon-bridge {args:?} on {i}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kathon-bridge {args:?} on {i} printed {out:?}: {e}"))
    }

    /// Starts a bridge on machine `i` (`run` with `extra` flags); waits until it serves.
    pub(crate) fn start_bridge(&self, i: usize, extra: &[&str]) -> Bridge {
        let log = self.dir.join(format!("bridge-{i}-{}.log", NEXT_LOG.fetch_add(1, Ordering::SeqCst)));
        let addr = self.addr(i).to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), bridge_bin(), "--data-dir"])
            .arg(self.data_dir(i))
            .args(["run", "--interface", &addr, "--name", &format!("machine {i}")])
            .args(extra)
            .env("RUST_LOG", "info,webrtc=warn,rtc=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.children.lock().unwrap().push(child.id());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.trim().starts_with("status:") => break,
                Some(Ok(_)) => {}
                _ => panic!("bridge {i} exited before serving: {}", std::fs::read_to_string(&log).unwrap_or_default()),
            }
        }
        // Keep draining stdout so the bridge never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Bridge { child, log, started: Instant::now() }
    }

    /// Polls `check` until it returns `Some`, for at most `limit`.
    pub(crate) fn wait<T>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Status of machine `i`'s bridge and peer.
    pub(crate) fn status(&self, i: usize) -> serde_json::Value {
        self.cli_json(i, &["status"])
    }

    /// Runs `f` on a thread inside machine `i`'s network namespace.
    pub(crate) fn in_ns<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = PathBuf::from("/var/run/netns").join(self.ns(i));
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

/// Moves the calling thread into a network namespace (sockets it makes afterwards live there).
pub(crate) fn enter_netns(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns({}) failed: {e}", path.display()));
}

impl Drop for Lan {
    fn drop(&mut self) {
        for pid in self.children.lock().map(|c| c.clone()).unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                nix::sys::signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        for i in 1..=self.n {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &format!("{}-sw", self.prefix)]).output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

pub(crate) struct Bridge {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) started: Instant,
}

impl Bridge {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "bridge exited with {status}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Resident memory, kB.
    pub(crate) fn rss_kb(&self) -> u64 {
        proc_field(self.pid(), "VmRSS:")
    }

    /// CPU time used so far (user + system), in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        utime + stime
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn proc_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Whether this process may create network namespaces.
pub(crate) fn can_make_namespaces() -> bool {
    nix::unistd::geteuid().is_root()
}
