//! The standalone agent as root tests run it: the process and its log, a private bpffs, a
//! temporary directory, and the lock around the machine-wide proxy routing.

use imdsguard_netns::can_create_namespaces;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The agent process and everything it printed.
pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    pub addr: String,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .arg("agent")
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let log = super::stderr_lines(&mut child);
        let mut agent = Agent {
            child,
            log,
            addr: String::new(),
        };
        let line = agent.wait_log("hubble: serving on ");
        // `<time> INFO hubble: serving on ADDR`: the address ends the line.
        agent.addr = line
            .split_once("hubble: serving on ")
            .map_or("", |(_, a)| a)
            .to_owned();
        agent
    }

    /// `start` with a command of the caller's making (another environment, a wrapper such as
    /// `strace -D` that leaves the agent the direct child): it must run `imdsguard agent` with a
    /// Hubble address, and its stderr is taken here.
    pub fn start_with(mut cmd: Command) -> Agent {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start the agent");
        let log = super::stderr_lines(&mut child);
        let mut agent = Agent {
            child,
            log,
            addr: String::new(),
        };
        let line = agent.wait_log("hubble: serving on ");
        agent.addr = line
            .split_once("hubble: serving on ")
            .map_or("", |(_, a)| a)
            .to_owned();
        agent
    }

    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self
                .log
                .lock()
                .ok()
                .and_then(|l| l.iter().find(|l| l.contains(needle)).cloned())
            {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the agent never logged {needle:?}; it logged:\n{}",
            self.logged()
        );
    }

    pub fn logged(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        // SIGKILL, like a crashed agent: nothing gets to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn observe(&self) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["observe", "--server", &self.addr, "--last", "1000"])
            .output()
            .expect("observe");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test's private bpffs and pins, removed whatever happens.
pub struct BpfRoot(pub PathBuf);

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn write(path: &Path, text: &str) {
    // Write then rename, as editors and config management do: the agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

/// Agent tests install the proxy's policy routing (a machine-wide ip rule): one at a time, and
/// each removes what it added.
pub static ROUTING: Mutex<()> = Mutex::new(());

pub struct ProxyRouting {
    added: bool,
}

impl ProxyRouting {
    pub fn take() -> ProxyRouting {
        ProxyRouting {
            added: !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE),
        }
    }
}

impl Drop for ProxyRouting {
    fn drop(&mut self) {
        if self.added {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

/// What every agent test starts with: root (else it is skipped), the routing lock, and the
/// second octet of its pods' subnet.
pub fn agent_test() -> Option<(MutexGuard<'static, ()>, ProxyRouting, u8)> {
    if !can_create_namespaces() {
        super::skip("needs root to create network namespaces");
        return None;
    }
    let serial = ROUTING.lock().unwrap_or_else(|e| e.into_inner());
    Some((
        serial,
        ProxyRouting::take(),
        150 + (std::process::id() % 50) as u8,
    ))
}
