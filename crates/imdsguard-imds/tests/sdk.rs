//! The official SDKs (tests/sdk: azure-identity, boto3, google-auth, from target/sdk-venv, which
//! scripts/prereqs.sh makes) against the emulator on loopback, each pointed at it by its own
//! documented setting. Needs no root; crates/imdsguard/tests/sdk.rs runs the same scripts in lab
//! pods through the agent's proxy.

use imdsguard_imds::emulator::{AWS_ACCESS_KEY_ID, Flavor, Options};
use imdsguard_imds::gcp::{ACCESS_TOKEN, SERVICE_ACCOUNT, TOKEN_LIFETIME};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or None (with the reason printed) when scripts/prereqs.sh has not made it.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("IMDSGUARD_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/sdk-venv"));
    if !venv.join("requirements.installed").exists() {
        eprintln!(
            "skipped: no SDK virtualenv at {} (scripts/prereqs.sh makes it)",
            venv.display()
        );
        return None;
    }
    Some(venv.join("bin/python"))
}

/// An emulator on 127.0.0.1 and every request line it logged.
struct Emulator {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

fn emulator(flavor: Flavor) -> Emulator {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let opts = Options {
        flavor,
        ..Default::default()
    };
    runtime.spawn(imdsguard_imds::server::serve(
        listener,
        opts,
        Arc::new(move |line: String| {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }),
    ));
    Emulator {
        addr,
        log,
        _runtime: runtime,
    }
}

/// Runs a script with only the environment given (no proxy, no credentials, no config files).
fn run(python: &Path, script: &str, env: &[(&str, &str)]) -> (i32, String) {
    let home = std::env::temp_dir().join(format!(
        "imdsguard-sdk-home-{}-{script}",
        std::process::id()
    ));
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(python)
        .arg(repo().join("tests/sdk").join(script))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .current_dir(&home)
        .output()
        .expect("run python");
    let _ = std::fs::remove_dir_all(&home);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `key=value` from the script's line.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {out}"))
}

fn number(out: &str, key: &str) -> i64 {
    field(out, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {out}"))
}

#[test]
fn azure_identity_gets_a_managed_identity_token() {
    let Some(python) = python() else { return };
    let e = emulator(Flavor::Azure);
    let host = format!("http://{}", e.addr);
    let (code, out) = run(
        &python,
        "azure_identity.py",
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &host)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        field(&out, "token").starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulated."),
        "{out}"
    );
    let left = number(&out, "expires_on") - number(&out, "now");
    assert!((86_390..=86_400).contains(&left), "{out}");
    let log = e.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    eprintln!("{out}\nthe emulator saw:\n{log}");
    // MSAL (under azure-identity) leaves the resource unencoded.
    assert!(
        log.contains(
            " GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com 200"
        ),
        "{log}"
    );
}

#[test]
fn boto3_gets_the_roles_credentials_with_imdsv2() {
    let Some(python) = python() else { return };
    let e = emulator(Flavor::Aws);
    let endpoint = format!("http://{}/", e.addr);
    let (code, out) = run(
        &python,
        "boto3_credentials.py",
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "method"), "iam-role", "{out}");
    assert_eq!(field(&out, "access_key_id"), AWS_ACCESS_KEY_ID, "{out}");
    let left = number(&out, "expiry") - number(&out, "now");
    assert!((6 * 3600 - 10..=6 * 3600).contains(&left), "{out}");
    let log = e.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    eprintln!("{out}\nthe emulator saw:\n{log}");
    for want in [
        " PUT /latest/api/token 200",
        " GET /latest/meta-data/iam/security-credentials/ 200",
        " GET /latest/meta-data/iam/security-credentials/eks-node-role 200",
    ] {
        assert!(log.contains(want), "no {want:?} in\n{log}");
    }
}

#[test]
fn google_auth_gets_the_default_service_accounts_token() {
    let Some(python) = python() else { return };
    let e = emulator(Flavor::Gcp);
    let host = e.addr.to_string();
    let (code, out) = run(
        &python,
        "google_auth.py",
        &[("GCE_METADATA_HOST", &host), ("GCE_METADATA_IP", &host)],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "token"), ACCESS_TOKEN, "{out}");
    assert_eq!(field(&out, "email"), SERVICE_ACCOUNT, "{out}");
    let left = number(&out, "expiry") - number(&out, "now");
    let lifetime = TOKEN_LIFETIME as i64;
    assert!((lifetime - 10..=lifetime).contains(&left), "{out}");
    let log = e.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    eprintln!("{out}\nthe emulator saw:\n{log}");
    for want in [
        " GET /computeMetadata/v1/instance/service-accounts/default/?recursive=true 200",
        " GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=",
    ] {
        assert!(log.contains(want), "no {want:?} in\n{log}");
    }
}
