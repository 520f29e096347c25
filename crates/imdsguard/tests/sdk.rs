//! Root tests: the official SDKs a user's pods run (azure-identity, boto3, google-auth: pinned in
//! tests/sdk/requirements.txt, installed by scripts/prereqs.sh into target/sdk-venv) get their
//! token or credentials from `imdsguard imds-emulator` in a lab pod, through the agent's L7 proxy
//! under an HTTP-rule allow policy; a pod under the deny policy gets the SDK's own error.
//!
//! One lab per cloud (the emulator plays one flavour), each with two pods: `sdk/sdk-app`, which
//! the allow policy selects (default deny, HTTP rules for the paths that SDK uses), and
//! `blocked/blocked-app`, which the deny policy drops. The scripts (tests/sdk/*.py) run inside the
//! pods' namespaces with nothing in their environment but what the test gives them.

mod common;

use common::agent::{Agent, BpfRoot, TempDir, agent_test, write};
use common::lab::Lab;
use imdsguard_imds::emulator::{AWS_ACCESS_KEY_ID, AWS_CREDENTIALS_LIFETIME, AWS_ROLE};
use imdsguard_imds::gcp::{ACCESS_TOKEN, SERVICE_ACCOUNT, TOKEN_LIFETIME};
use imdsguard_lab::lab::{LabState, PodRecord};
use imdsguard_netns::unique_name;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The mark that leads the proxy's upstream connections into this test's lab. Not `imdsguard
/// lab`'s 0xa00: a lab someone else has up at the same time (the demo, `lab up`, other root tests)
/// would take (or lose) them. Not 0x200 either, the datapath's mark to the proxy. One of four by
/// process, so two runs of this test at once rarely meet; when they do, `lab up` finds the other's
/// route and refuses.
fn lab_mark() -> u32 {
    [0xb00, 0xc00, 0xd00, 0xe00][std::process::id() as usize % 4]
}
const ALLOWED: &str = "sdk-app";
const BLOCKED: &str = "blocked-app";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or None (with the reason) when scripts/prereqs.sh has not made it.
fn sdk_python() -> Option<PathBuf> {
    let venv = std::env::var_os("IMDSGUARD_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/sdk-venv"));
    // Written last by scripts/prereqs.sh: a venv without it is half made.
    if !venv.join("requirements.installed").exists() {
        common::skip(&format!(
            "no SDK virtualenv at {} (scripts/prereqs.sh makes it)",
            venv.display()
        ));
        return None;
    }
    Some(venv.join("bin/python"))
}

/// What differs between the clouds.
struct Cloud {
    flavor: &'static str,
    /// The allow policy's HTTP rules (YAML flow sequences), for the paths the SDK asks for.
    http: &'static [&'static str],
    script: &'static str,
    /// The environment the script runs with besides PATH, HOME and LANG.
    env: &'static [(&'static str, &'static str)],
    /// A request of the SDK's own cloud that the HTTP rules do not allow (curl arguments): the
    /// proxy must answer 403 to the allowed pod, so the rules are enforced, not only watched.
    outside: &'static [&'static str],
    /// Extra arguments for the blocked pod's run, and extra environment.
    blocked_args: &'static [&'static str],
    blocked_env: &'static [(&'static str, &'static str)],
}

/// The seed's shape (examples/azure-imds): a CIDR group for IMDS, an allow policy for one
/// namespace and a deny for every other. Unlike the seed's allow, this one leaves egress default
/// deny on, so its HTTP rules are enforced, not only watched.
fn policies(cloud: &Cloud) -> String {
    let rules: String = cloud
        .http
        .iter()
        .map(|r| format!("                - {r}\n"))
        .collect();
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {{name: imds}}
spec:
  externalCIDRs: ["169.254.169.254/32"]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: {flavor}-imds-allow-sdk}}
spec:
  endpointSelector:
    matchExpressions:
      - {{key: k8s:io.kubernetes.pod.namespace, operator: In, values: [sdk]}}
  egress:
    - toCIDRSet:
        - cidrGroupRef: imds
      toPorts:
        - ports:
            - {{port: "80", protocol: TCP}}
          rules:
            http:
{rules}---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: {flavor}-imds-deny}}
spec:
  endpointSelector:
    matchExpressions:
      - {{key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [sdk]}}
  egressDeny:
    - toCIDRSet:
        - cidrGroupRef: imds
"#,
        flavor = cloud.flavor
    )
}

/// The pod's own route to 169.254.169.254 leaves by its eth0, and the host sends what comes in
/// from the pod to the lab's emulator namespace, nowhere else: checked before any SDK runs.
fn check_route(state: &LabState, pod: &PodRecord) {
    let inside = imdsguard_netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &pod.netns,
            "ip",
            "route",
            "get",
            "169.254.169.254",
        ],
    )
    .expect("ip route get in the pod");
    assert_eq!(
        imdsguard_netns::route_dev(&inside).as_deref(),
        Some("eth0"),
        "{inside}"
    );
    let host = imdsguard_netns::run(
        "ip",
        &[
            "route",
            "get",
            "169.254.169.254",
            "from",
            &pod.ipv4.to_string(),
            "iif",
            &pod.netns,
        ],
    )
    .expect("ip route get on the host");
    let imds = state.imds.as_ref().map(|i| i.netns.as_str());
    assert_eq!(
        imdsguard_netns::route_dev(&host).as_deref(),
        imds,
        "from {} 169.254.169.254 must lead to the lab's emulator: {host}",
        pod.name
    );
}

/// Runs an SDK script in a pod's network namespace with the venv's python, an environment of
/// only what is given, and a bound on its time. Returns the exit code and what it printed.
fn run_sdk(
    python: &Path,
    pod: &PodRecord,
    home: &Path,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String) {
    std::fs::create_dir_all(home).expect("home");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["--kill-after=5", "120", "ip", "netns", "exec", &pod.netns])
        .arg(python)
        .arg(repo().join("tests/sdk").join(script))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .current_dir(home)
        .output()
        .expect("run the SDK script");
    eprintln!(
        "{script} in {} took {:.1} s",
        pod.name,
        started.elapsed().as_secs_f64()
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// curl in a pod: the status and the body (status 0 when nothing answered).
fn curl(pod: &PodRecord, args: &[&str]) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &pod.netns, "curl", "-s", "--max-time", "3"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `key=value` from the script's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {out}"))
}

fn seconds_left(out: &str, key: &str) -> i64 {
    let n = |k: &str| -> i64 {
        field(out, k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} in {out}"))
    };
    n(key) - n("now")
}

/// What one SDK run in the lab showed: its output, what the emulator logged, the flows.
struct Outcome {
    allowed: (i32, String),
    /// The status and body the allowed pod got for a request outside the rules.
    outside: (u16, String),
    blocked: (i32, String),
    imds_log: String,
    flows: String,
    allowed_pod: PodRecord,
    blocked_pod: PodRecord,
    /// The agent's last lines, for a failure's message.
    agent_log: String,
}

/// Brings up a lab for the cloud, starts the agent on it with the policies, runs the script in
/// both pods. None when the test is skipped.
fn run_in_lab(cloud: &Cloud, third_octet: u8) -> Option<Outcome> {
    let python = sdk_python()?;
    let (_serial, _routing, k) = agent_test()?;
    let dir = TempDir(std::env::temp_dir().join(unique_name(&format!("sdk{}", cloud.flavor))));
    std::fs::create_dir_all(dir.0.join("policies")).expect("mkdir");
    let topology = format!(
        "podCIDR: 10.{k}.{third_octet}.0/24\nimds: {}\nnamespaces: {{sdk: {{}}, blocked: {{}}}}\nendpoints:\n  - {{name: {ALLOWED}, namespace: sdk, labels: {{app: sdk}}}}\n  - {{name: {BLOCKED}, namespace: blocked, labels: {{app: blocked}}}}\n",
        cloud.flavor
    );
    let topology =
        imdsguard_lab::topology::parse(&imdsguard_manifest::Source::new("lab.yaml", topology))
            .expect("topology");
    let lab = Lab::up_parsed(&dir.0, "sd", &topology, lab_mark());
    let allowed_pod = lab.state().pod(ALLOWED).expect("allowed pod").clone();
    let blocked_pod = lab.state().pod(BLOCKED).expect("blocked pod").clone();
    for pod in [&allowed_pod, &blocked_pod] {
        check_route(lab.state(), pod);
    }
    write(&dir.0.join("policies").join("imds.yaml"), &policies(cloud));
    let bpf = BpfRoot(dir.0.join("bpf"));
    let proxy_port = (18_500 + std::process::id() % 1000).to_string();
    let endpoints = lab.state().endpoints_file();
    let policies_dir = dir.0.join("policies");
    let agent = Agent::start(&[
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--policies",
        &policies_dir.to_string_lossy(),
        "--bpf-root",
        &bpf.0.to_string_lossy(),
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &proxy_port,
        "--proxy-upstream-mark",
        &format!("{:#x}", lab_mark()),
        "--node-name",
        "lab-node",
    ]);
    for pod in [&allowed_pod, &blocked_pod] {
        agent.wait_log(&format!("attached to {}", pod.netns));
    }
    let allowed = run_sdk(
        &python,
        &allowed_pod,
        &dir.0.join("home-allowed"),
        cloud.script,
        &[],
        cloud.env,
    );
    let outside = curl(&allowed_pod, cloud.outside);
    let env: Vec<(&str, &str)> = cloud.env.iter().chain(cloud.blocked_env).copied().collect();
    let blocked = run_sdk(
        &python,
        &blocked_pod,
        &dir.0.join("home-blocked"),
        cloud.script,
        cloud.blocked_args,
        &env,
    );
    // The flows come through Hubble a little later; whatever they show after a while is judged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut flows = agent.observe();
    while Instant::now() < deadline
        && !(flows.contains(&format!("sdk/{ALLOWED}:"))
            && flows.contains("http-response")
            && flows.contains(&format!("blocked/{BLOCKED}:")))
    {
        std::thread::sleep(Duration::from_millis(200));
        flows = agent.observe();
    }
    let imds_log = std::fs::read_to_string(lab.state().imds_log()).unwrap_or_default();
    eprintln!(
        "{ALLOWED}: {}\n{BLOCKED}: {}\nthe emulator saw:\n{imds_log}",
        allowed.1, blocked.1
    );
    let outcome = Outcome {
        allowed,
        outside,
        blocked,
        imds_log,
        flows,
        allowed_pod,
        blocked_pod,
        agent_log: agent_tail(&agent.logged()),
    };
    drop(agent);
    drop(lab);
    Some(outcome)
}

fn agent_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Outcome {
    /// What a failed assertion shows besides its own message.
    fn context(&self) -> String {
        format!(
            "\nsdk-app printed:\n{}\nblocked-app printed:\n{}\nflows:\n{}\nthe emulator saw:\n{}\nthe agent logged (last lines):\n{}",
            self.allowed.1, self.blocked.1, self.flows, self.imds_log, self.agent_log
        )
    }

    /// The allowed pod's requests went through the proxy, were forwarded and answered 200; the
    /// blocked pod's were dropped by the datapath and never reached the emulator.
    fn assert_paths(&self, requests: &[&str]) {
        let ctx = || self.context();
        let allowed = format!("sdk/{ALLOWED}:");
        let mine: Vec<&str> = self
            .flows
            .lines()
            .filter(|l| l.contains(&allowed))
            .collect();
        assert!(
            mine.iter().any(|l| l.contains("to-proxy FORWARDED")),
            "{}",
            ctx()
        );
        for r in requests {
            let (method, path) = r.split_once(' ').unwrap_or(("GET", r));
            let forwarded = format!(
                "http-request FORWARDED (HTTP/1.1 {method} http://169.254.169.254:80{path}"
            );
            assert!(
                mine.iter().any(|l| l.contains(&forwarded)),
                "no {forwarded:?}: {}",
                ctx()
            );
            assert!(
                self.imds_log
                    .lines()
                    .any(|l| l.contains(&format!(" {method} {path}")) && l.ends_with(" 200")),
                "the emulator never answered {r} with 200: {}",
                ctx()
            );
        }
        assert_eq!(
            (self.outside.0, self.outside.1.trim()),
            (403, "Access denied"),
            "a request outside the HTTP rules: {}",
            ctx()
        );
        let blocked = format!("blocked/{BLOCKED}:");
        assert!(
            self.flows
                .lines()
                .any(|l| l.contains(&blocked) && l.contains("Policy denied by denylist DROPPED")),
            "{}",
            ctx()
        );
        let blocked_peer = format!("{}:", self.blocked_pod.ipv4);
        assert!(
            !self.imds_log.lines().any(|l| l.starts_with(&blocked_peer)),
            "the blocked pod reached the emulator: {}",
            ctx()
        );
        assert_ne!(self.allowed_pod.ipv4, self.blocked_pod.ipv4);
    }
}

#[test]
fn azure_identity_gets_a_token_through_the_proxy() {
    let cloud = Cloud {
        flavor: "azure",
        http: &[r#"{method: GET, path: '/metadata/identity/oauth2/token[?].*'}"#],
        script: "azure_identity.py",
        outside: &[
            "-H",
            "Metadata: true",
            "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
        ],
        env: &[],
        // By the SDK's settings five retries would take some 36 s to give the same answer.
        blocked_args: &["--no-retry"],
        blocked_env: &[],
    };
    let Some(o) = run_in_lab(&cloud, 41) else {
        return;
    };
    let (code, out) = &o.allowed;
    assert_eq!(*code, 0, "{}", o.context());
    assert!(
        field(out, "token").starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulated."),
        "{out}"
    );
    // The emulator's expires_in is 86399 s.
    assert!(
        (86_390..=86_400).contains(&seconds_left(out, "expires_on")),
        "{out}"
    );
    // MSAL (under azure-identity) sends the resource unencoded.
    o.assert_paths(&[
        "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com",
    ]);
    let (code, out) = &o.blocked;
    assert_eq!(*code, 2, "{}", o.context());
    assert!(
        out.contains("error: CredentialUnavailableError: ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint."),
        "{out}"
    );
}

#[test]
fn boto3_gets_credentials_with_imdsv2_through_the_proxy() {
    let cloud = Cloud {
        flavor: "aws",
        http: &[
            r#"{method: PUT, path: '/latest/api/token'}"#,
            r#"{method: GET, path: '/latest/meta-data/iam/security-credentials/.*'}"#,
        ],
        script: "boto3_credentials.py",
        outside: &["http://169.254.169.254/latest/meta-data/instance-id"],
        // Only the instance metadata provider can find anything: no keys, profile, files or
        // container variables (AWS_EC2_METADATA_DISABLED unset).
        env: &[
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_CONFIG_FILE", "/nonexistent/aws/config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws/credentials",
            ),
            ("BOTO_CONFIG", "/nonexistent/boto.cfg"),
        ],
        blocked_args: &[],
        blocked_env: &[],
    };
    let Some(o) = run_in_lab(&cloud, 42) else {
        return;
    };
    let (code, out) = &o.allowed;
    assert_eq!(*code, 0, "{}", o.context());
    assert_eq!(field(out, "method"), "iam-role", "{out}");
    assert_eq!(field(out, "access_key_id"), AWS_ACCESS_KEY_ID, "{out}");
    assert_eq!(field(out, "region"), "eu-west-1", "{out}");
    let lifetime = AWS_CREDENTIALS_LIFETIME as i64;
    assert!(
        (lifetime - 10..=lifetime).contains(&seconds_left(out, "expiry")),
        "{out}"
    );
    o.assert_paths(&[
        "PUT /latest/api/token",
        "GET /latest/meta-data/iam/security-credentials/",
        &format!("GET /latest/meta-data/iam/security-credentials/{AWS_ROLE}"),
    ]);
    let (code, out) = &o.blocked;
    assert_eq!(*code, 2, "{}", o.context());
    assert!(
        out.contains("error: NoCredentialsError: Unable to locate credentials"),
        "{out}"
    );
}

#[test]
fn google_auth_gets_a_token_through_the_proxy() {
    let cloud = Cloud {
        flavor: "gcp",
        http: &[
            r#"{method: GET, path: '/computeMetadata/v1/instance/service-accounts/default/.*'}"#,
        ],
        script: "google_auth.py",
        outside: &[
            "-H",
            "Metadata-Flavor: Google",
            "http://169.254.169.254/computeMetadata/v1/project/project-id",
        ],
        // The lab's address: no name to resolve (metadata.google.internal).
        env: &[
            ("GCE_METADATA_HOST", "169.254.169.254"),
            ("GCE_METADATA_IP", "169.254.169.254"),
        ],
        blocked_args: &[],
        // 1 s per try instead of 3: five tries and their back-off still take some 20 s.
        blocked_env: &[("GCE_METADATA_TIMEOUT", "1")],
    };
    let Some(o) = run_in_lab(&cloud, 43) else {
        return;
    };
    let (code, out) = &o.allowed;
    assert_eq!(*code, 0, "{}", o.context());
    assert_eq!(field(out, "token"), ACCESS_TOKEN, "{out}");
    assert_eq!(field(out, "email"), SERVICE_ACCOUNT, "{out}");
    let lifetime = TOKEN_LIFETIME as i64;
    assert!(
        (lifetime - 10..=lifetime).contains(&seconds_left(out, "expiry")),
        "{out}"
    );
    o.assert_paths(&[
        "GET /computeMetadata/v1/instance/service-accounts/default/?recursive=true",
        "GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=",
    ]);
    let (code, out) = &o.blocked;
    assert_eq!(*code, 2, "{}", o.context());
    assert!(
        out.contains("error: RefreshError: ")
            && out.contains("Failed to retrieve http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/?recursive=true from the Google Compute Engine metadata service"),
        "{out}"
    );
}
