//! What several root test files share: a private Kubernetes API server, and a child's stderr
//! collected line by line.
#![allow(dead_code)]

use imdsguard_netns::unique_name;
pub mod agent;

use kube::Client;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn kapilite_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("IMDSGUARD_KAPILITE").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/kapilite")),
        Some(PathBuf::from("/work/shared/tools/kapilite")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("start.sh").exists())
        .expect("kapilite not found: set IMDSGUARD_KAPILITE to the folder holding start.sh")
}

/// A private API server, stopped and removed on drop.
pub struct Kapilite {
    pub dir: PathBuf,
    pub port: u16,
}

impl Kapilite {
    pub fn start() -> Kapilite {
        let dir = std::env::temp_dir().join(unique_name("kapi"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Three free ports in a row: the API server and etcd's two.
        // Tests of one binary start servers at once: each takes its own slot.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let slot = NEXT.fetch_add(50, std::sync::atomic::Ordering::Relaxed);
        let port = (0..50)
            .map(|i| 20_000 + ((std::process::id() as u16 % 100) * 300 + (slot + i) * 3) % 30_000)
            .find(|p| (0..3).all(|d| std::net::TcpListener::bind(("127.0.0.1", p + d)).is_ok()))
            .expect("free ports");
        let k = Kapilite { dir, port };
        k.up();
        k
    }

    /// Starts (or restarts) the server; a second try when a loaded machine made it miss
    /// start.sh's 30 s deadline.
    pub fn up(&self) {
        let mut failure = String::new();
        for _ in 0..2 {
            let out = Command::new(kapilite_dir().join("start.sh"))
                .arg(&self.dir)
                .arg(self.port.to_string())
                .output()
                .expect("run kapilite's start.sh");
            if out.status.success() {
                return;
            }
            failure = format!(
                "{}\nkapilite.log: {}\netcd.log: {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("kapilite.log")).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            self.down();
        }
        panic!("kapilite did not start: {failure}");
    }

    pub fn down(&self) {
        let _ = Command::new(kapilite_dir().join("stop.sh"))
            .arg(&self.dir)
            .output();
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub async fn client(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        Client::try_from(config).expect("client")
    }
}

impl Drop for Kapilite {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects `child`'s stderr (spawned with `Stdio::piped()`) line by line as it comes, so a test
/// can wait for a log line and show the whole log when it fails.
pub fn stderr_lines(
    child: &mut std::process::Child,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader};
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
    }
    log
}
