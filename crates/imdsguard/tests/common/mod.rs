//! What several root test files share: a private Kubernetes API server, a child's stderr
//! collected line by line, and the record of tests that were skipped.
#![allow(dead_code)]

use imdsguard_netns::unique_name;
pub mod agent;
pub mod lab;

use kube::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a test that needs an API server did not run.
pub const NO_API_SERVER: &str =
    "no Kubernetes API server: set KUBEBUILDER_ASSETS or IMDSGUARD_TEST_APISERVER";

/// Says that the calling test is skipped and why (imdsguard_netns::skip_test).
pub fn skip(reason: &str) {
    imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), reason);
}

/// `CI=true` (or `1`): what would be skipped on a workstation is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Where the tests get a Kubernetes API server from.
#[derive(Clone, Debug)]
pub enum ApiServerSource {
    /// `IMDSGUARD_TEST_APISERVER`: a folder with `start.sh RUNDIR PORT` (starts a server on
    /// 127.0.0.1:PORT, may use PORT+1 and PORT+2, writes RUNDIR/kubeconfig and prints
    /// `KUBECONFIG=<path>`) and `stop.sh RUNDIR` (stops it; a later start.sh with the same RUNDIR
    /// brings the same data back).
    Scripts(PathBuf),
    /// `KUBEBUILDER_ASSETS`: a folder with the `etcd` and `kube-apiserver` binaries, as
    /// controller-runtime's envtest and `setup-envtest use` lay it out. The test starts both.
    Assets(PathBuf),
}

/// The API server this machine offers tests, if any. `IMDSGUARD_TEST_APISERVER` wins over
/// `KUBEBUILDER_ASSETS` (the latter is often set for other projects). A variable that names a
/// folder without what it should hold is a mistake, not a reason to skip: it panics.
pub fn api_server_source() -> Option<ApiServerSource> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("IMDSGUARD_TEST_APISERVER") {
        for script in ["start.sh", "stop.sh"] {
            assert!(
                dir.join(script).is_file(),
                "IMDSGUARD_TEST_APISERVER={} has no {script}",
                dir.display()
            );
        }
        return Some(ApiServerSource::Scripts(dir));
    }
    if let Some(dir) = var("KUBEBUILDER_ASSETS") {
        for binary in ["etcd", "kube-apiserver"] {
            assert!(
                dir.join(binary).is_file(),
                "KUBEBUILDER_ASSETS={} has no {binary} (setup-envtest use -p path prints the folder)",
                dir.display()
            );
        }
        return Some(ApiServerSource::Assets(dir));
    }
    None
}

/// A private API server, stopped and removed on drop.
pub struct ApiServer {
    pub dir: PathBuf,
    /// The API server's port; its etcd may use the next two.
    pub port: u16,
    source: ApiServerSource,
    kubeconfig: Mutex<PathBuf>,
    /// The processes this test started itself (KUBEBUILDER_ASSETS): kube-apiserver, etcd.
    children: Mutex<Vec<Child>>,
}

impl ApiServer {
    /// A new, empty API server. `None` when the machine offers none: the test has been marked
    /// skipped and returns. Under `CI=true` that panics instead.
    pub fn start() -> Option<ApiServer> {
        let Some(source) = api_server_source() else {
            if in_ci() {
                panic!("{NO_API_SERVER} (CI=true: tests that need one may not be skipped)");
            }
            skip(NO_API_SERVER);
            return None;
        };
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
        let s = ApiServer {
            kubeconfig: Mutex::new(dir.join("kubeconfig")),
            dir,
            port,
            source,
            children: Mutex::new(Vec::new()),
        };
        s.up();
        Some(s)
    }

    /// Starts (or restarts, with the same data) the server; a second try when a loaded machine
    /// made it miss its deadline.
    pub fn up(&self) {
        let mut failure = String::new();
        for _ in 0..2 {
            let started = match &self.source {
                ApiServerSource::Scripts(scripts) => self.up_scripts(scripts),
                ApiServerSource::Assets(assets) => self.up_assets(assets),
            };
            match started {
                Ok(()) => return,
                Err(e) => failure = format!("{e}\n{}", self.logs()),
            }
            self.down();
        }
        panic!("the test API server did not start: {failure}");
    }

    pub fn down(&self) {
        match &self.source {
            ApiServerSource::Scripts(scripts) => {
                let _ = Command::new(scripts.join("stop.sh"))
                    .arg(&self.dir)
                    .output();
            }
            ApiServerSource::Assets(_) => {
                // kube-apiserver first, then etcd: each gets SIGTERM and 10 s to exit.
                let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
                for mut child in children.drain(..) {
                    stop(&mut child);
                }
            }
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn client(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        Client::try_from(config).expect("client")
    }

    /// Every `*.log` the server left in its folder, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for path in entries.flatten().map(|e| e.path()) {
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    out += &format!("--- {} (last lines)\n", path.display());
                    for line in tail.into_iter().rev() {
                        out += line;
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    fn up_scripts(&self, scripts: &Path) -> Result<(), String> {
        let out = Command::new(scripts.join("start.sh"))
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output()
            .map_err(|e| format!("{}: {e}", scripts.join("start.sh").display()))?;
        if !out.status.success() {
            return Err(format!(
                "start.sh failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // start.sh says where it wrote the kubeconfig; RUNDIR/kubeconfig if it does not.
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(path) = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("KUBECONFIG="))
        {
            *self.kubeconfig.lock().unwrap_or_else(|e| e.into_inner()) = PathBuf::from(path);
        }
        Ok(())
    }

    /// etcd and kube-apiserver from KUBEBUILDER_ASSETS, started as controller-runtime's envtest
    /// starts them (pkg/internal/testing/controlplane): etcd on 127.0.0.1 with `--unsafe-no-fsync`;
    /// kube-apiserver on the secure port only, with the ServiceAccount admission plugin off (no
    /// controller creates the `default` service accounts) and a service-account signing key.
    /// Unlike envtest, every request is allowed (`--authorization-mode=AlwaysAllow`) and the
    /// tests' user is a client certificate in `system:masters`.
    fn up_assets(&self, assets: &Path) -> Result<(), String> {
        let certs = self.dir.join("certs");
        if !certs.join("client.crt").exists() {
            make_certs(&certs)?;
        }
        let (p, etcd_port, peer_port) = (self.port, self.port + 1, self.port + 2);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!(
                "--data-dir={}",
                self.dir.join("etcd-data").display()
            ))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--unsafe-no-fsync=true")
            .stdout(log_file(&self.dir.join("etcd.log"))?)
            .stderr(log_file(&self.dir.join("etcd.log"))?)
            .spawn()
            .map_err(|e| format!("{}: {e}", assets.join("etcd").display()))?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(0, etcd);
        wait_for(Duration::from_secs(30), || etcd_healthy(etcd_port))
            .map_err(|()| "etcd did not become healthy in 30 s".to_owned())?;

        let cert = |name: &str| certs.join(name).display().to_string();
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={p}"))
            .arg(format!("--cert-dir={}", certs.display()))
            .arg(format!("--tls-cert-file={}", cert("server.crt")))
            .arg(format!("--tls-private-key-file={}", cert("server.key")))
            .arg(format!("--client-ca-file={}", cert("ca.crt")))
            .arg("--authorization-mode=AlwaysAllow")
            .arg(format!("--service-account-issuer=https://127.0.0.1:{p}/"))
            .arg(format!("--service-account-key-file={}", cert("sa.key")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                cert("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--allow-privileged=true")
            .stdout(log_file(&self.dir.join("kube-apiserver.log"))?)
            .stderr(log_file(&self.dir.join("kube-apiserver.log"))?)
            .spawn()
            .map_err(|e| format!("{}: {e}", assets.join("kube-apiserver").display()))?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(0, apiserver);

        let kubeconfig = self.dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: envtest, cluster: {{server: \"https://127.0.0.1:{p}\", \
                 certificate-authority: \"{}\"}}}}]\n\
                 users: [{{name: admin, user: {{client-certificate: \"{}\", client-key: \"{}\"}}}}]\n\
                 contexts: [{{name: envtest, context: {{cluster: envtest, user: admin}}}}]\n\
                 current-context: envtest\n",
                cert("ca.crt"),
                cert("client.crt"),
                cert("client.key")
            ),
        )
        .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
        *self.kubeconfig.lock().unwrap_or_else(|e| e.into_inner()) = kubeconfig.clone();
        wait_for(Duration::from_secs(60), || ready(&kubeconfig))
            .map_err(|()| "kube-apiserver's /readyz did not answer ok in 60 s".to_owned())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, the server's certificate for 127.0.0.1, a client certificate in `system:masters`, and the
/// service-account signing key, made with the openssl command.
fn make_certs(certs: &Path) -> Result<(), String> {
    std::fs::create_dir_all(certs).map_err(|e| format!("mkdir {}: {e}", certs.display()))?;
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(certs)
            .output()
            .map_err(|e| {
                format!("openssl (needed to make the test API server's certificates): {e}")
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let write = |name: &str, text: &str| {
        std::fs::write(certs.join(name), text).map_err(|e| format!("write {name}: {e}"))
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=imdsguard-test-ca",
    ])?;
    write(
        "server.ext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )?;
    write("client.ext", "extendedKeyUsage=clientAuth\n")?;
    for (name, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("client", "/O=system:masters/CN=imdsguard-test"),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "30",
            "-extfile",
            &ext,
        ])?;
    }
    openssl(&["genrsa", "-out", "sa.key", "2048"])
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(())
}

/// etcd's `/health` says `"health":"true"`.
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|()| s.read_to_string(&mut answer))
        .is_ok()
        && answer.replace(' ', "").contains("\"health\":\"true\"")
}

/// The API server's `/readyz` answers `ok` to the kubeconfig's user. On a thread of its own, so
/// that it works whether or not the caller is inside a runtime.
fn ready(kubeconfig: &Path) -> bool {
    let kubeconfig = kubeconfig.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).ok()?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .ok()?;
            let client = Client::try_from(config).ok()?;
            // kube's request builder for the path `/readyz`.
            let request = kube::core::Request::new("")
                .get("readyz", &Default::default())
                .ok()?;
            let answer = tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
                .await
                .ok()?
                .ok()?;
            Some(answer.trim() == "ok")
        })
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we have not waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
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

/// A single-threaded Tokio runtime for a test's API calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Cilium's CRDs from deploy/crds, created in the test's API server and given time to be
/// established before first use.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for entry in std::fs::read_dir(&dir).expect("deploy/crds") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD YAML");
        api.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}
