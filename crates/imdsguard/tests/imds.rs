//! `imdsguard imds-emulator` over real HTTP on loopback, read with curl: Azure's answers and its
//! request log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.to_owned())
}

#[test]
fn the_azure_emulator_answers_and_logs_every_request() {
    let dir = std::env::temp_dir().join(format!("imds-emulator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log = dir.join("requests.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["imds-emulator", "--listen", "127.0.0.1:0", "--log-file"])
        .arg(&log)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let _guard = Guard(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("imds-emulator: serving azure on ")
                .map(str::to_owned)
        })
        .expect("the emulator's address");
    std::thread::spawn(move || for _ in lines {});
    let url = |p: &str| format!("http://{addr}{p}");
    let (code, body) = curl(&[
        "-H",
        "Metadata: true",
        &url("/metadata/instance/compute/location?api-version=2021-02-01&format=text"),
    ]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "westeurope"));
    let (code, body) = curl(&[&url("/metadata/instance?api-version=2021-02-01")]);
    assert_eq!(code, "400");
    assert!(
        body.contains("Required metadata header not specified"),
        "{body}"
    );
    let (code, body) = curl(&[
        "-H",
        "Metadata: true",
        &url(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net",
        ),
    ]);
    assert_eq!(code, "200");
    assert!(
        body.contains(r#""resource":"https://api.kusto.windows.net""#),
        "{body}"
    );
    let logged = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 3, "{logged}");
    assert!(lines[2].contains(" GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net 200"), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}
