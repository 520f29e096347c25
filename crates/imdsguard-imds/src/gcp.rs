//! GCP's metadata server (docs/metadata-services.md#gcp-the-metadata-server), as Compute Engine
//! serves it under `/computeMetadata/v1/`, enough for google-auth and the other Google SDKs:
//!
//! - every request but `/` needs `Metadata-Flavor: Google` (or the legacy
//!   `X-Google-Metadata-Request: True`), and one with `X-Forwarded-For` is refused; every answer
//!   carries `Metadata-Flavor: Google`, which the SDKs check to know they talk to the real thing;
//! - a directory (`…/`) lists its entries one a line, subdirectories with a trailing `/`; asked
//!   without its trailing slash it redirects (301) there;
//! - `?recursive=true` gives a directory as one JSON document, keys in camelCase
//!   (`service-accounts` is `serviceAccounts`), as google-auth's
//!   `instance/service-accounts/default/?recursive=true` wants (`aliases`, `email`, `scopes`);
//! - a leaf is text (`application/text`), a list one item a line; `?alt=json` gives it as JSON;
//! - `instance/service-accounts/<default|email>/token` gives an OAuth access token and
//!   `…/identity?audience=…` a (not really signed) ID token; neither shows in a recursive listing.

use crate::emulator::{Request, Response, param, split, unix_now};
use serde_json::{Value, json};

/// The VM's service account: `default` is an alias of it.
pub const SERVICE_ACCOUNT: &str = "123456789012-compute@developer.gserviceaccount.com";
/// What the token endpoint issues, and for how long (seconds).
pub const ACCESS_TOKEN: &str = "ya29.emulated";
pub const TOKEN_LIFETIME: u64 = 3599;

const ROOT: &str = "/computeMetadata/v1";

fn tree() -> Value {
    let account = json!({
        "aliases": ["default"],
        "email": SERVICE_ACCOUNT,
        "scopes": [
            "https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email"
        ]
    });
    json!({
        "instance": {
            "attributes": {
                "cluster-location": "europe-west1",
                "cluster-name": "gke-default",
                "cluster-uid": "3f1c2b9e8d7a4c6b9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"
            },
            "hostname": "gke-default-pool-1a2b3c4d-xyz0.europe-west1-b.c.emulated-project.internal",
            "id": 4520031799277581759u64,
            "machineType": "projects/123456789012/machineTypes/e2-standard-4",
            "name": "gke-default-pool-1a2b3c4d-xyz0",
            "networkInterfaces": [{
                "gateway": "10.132.0.1",
                "ip": "10.132.0.23",
                "mac": "42:01:0a:84:00:17",
                "mtu": 1460,
                "network": "projects/123456789012/networks/default",
                "subnetmask": "255.255.240.0"
            }],
            "serviceAccounts": {
                SERVICE_ACCOUNT: account.clone(),
                "default": account
            },
            "zone": "projects/123456789012/zones/europe-west1-b"
        },
        "project": {
            "attributes": {},
            "numericProjectId": 123456789012u64,
            "projectId": "emulated-project"
        },
        "universe": {
            "universeDomain": "googleapis.com"
        }
    })
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "application/text",
        headers: Vec::new(),
        body: body.into(),
    }
}

fn json_response(value: &Value) -> Response {
    Response {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: value.to_string(),
    }
}

fn not_found() -> Response {
    Response {
        status: 404,
        content_type: "text/html; charset=UTF-8",
        headers: Vec::new(),
        body: "Not Found\n".into(),
    }
}

/// `service-accounts` → `serviceAccounts`: how a path segment is keyed in the JSON.
fn camel(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut upper = false;
    for c in segment.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `serviceAccounts` → `service-accounts`: how a JSON key is listed and addressed.
fn kebab(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_directory(v: &Value) -> bool {
    match v {
        Value::Object(_) => true,
        Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_object),
        _ => false,
    }
}

fn child<'a>(node: &'a Value, segment: &str) -> Option<&'a Value> {
    match node {
        Value::Object(m) => m.get(segment).or_else(|| m.get(&camel(segment))),
        Value::Array(a) if is_directory(node) => {
            segment.parse::<usize>().ok().and_then(|i| a.get(i))
        }
        _ => None,
    }
}

fn leaf_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|item| match item {
                Value::String(s) => format!("{s}\n"),
                other => format!("{other}\n"),
            })
            .collect(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn listing(node: &Value, extra: &[&str]) -> String {
    let mut entries: Vec<String> = match node {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let name = kebab(k);
                if is_directory(v) {
                    format!("{name}/")
                } else {
                    name
                }
            })
            .collect(),
        Value::Array(a) => (0..a.len()).map(|i| format!("{i}/")).collect(),
        _ => Vec::new(),
    };
    entries.extend(extra.iter().map(|e| (*e).to_owned()));
    entries.sort();
    entries.iter().map(|e| format!("{e}\n")).collect()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// `…/identity?audience=…[&format=full]`: a JWT shaped like Google's (RS256 header, the claims
/// Compute Engine puts in), signed by nobody.
fn identity(params: &[(String, String)]) -> Response {
    let Some(audience) = param(params, "audience").filter(|a| !a.is_empty()) else {
        return text(400, "non-empty audience parameter required\n");
    };
    let now = unix_now();
    let mut claims = json!({
        "aud": audience,
        "azp": "104857600000000000001",
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "104857600000000000001"
    });
    if param(params, "format") == Some("full") {
        claims["email"] = json!(SERVICE_ACCOUNT);
        claims["email_verified"] = json!(true);
    }
    let header = json!({"alg": "RS256", "kid": "emulated", "typ": "JWT"});
    text(
        200,
        format!(
            "{}.{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes()),
            base64url(b"emulated-signature")
        ),
    )
}

pub(crate) fn handle(req: &Request) -> Response {
    let mut r = answer(req);
    r.headers.push(("Metadata-Flavor", "Google".into()));
    r.headers.push(("Server", "Metadata Server for VM".into()));
    r.headers.push(("X-XSS-Protection", "0".into()));
    r.headers.push(("X-Frame-Options", "SAMEORIGIN".into()));
    r
}

fn answer(req: &Request) -> Response {
    let (path, params) = split(&req.target);
    if path == "/" {
        return text(200, "computeMetadata/\n");
    }
    if req.header("X-Forwarded-For").is_some() {
        return text(403, "Forbidden");
    }
    let flavored = req.header("Metadata-Flavor") == Some("Google")
        || req
            .header("X-Google-Metadata-Request")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !flavored {
        return text(
            403,
            format!(
                "Your client does not have permission to get URL <code>{path}</code> from this server. Missing Metadata-Flavor:Google header."
            ),
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        return text(405, "Method Not Allowed\n");
    }
    if path == "/computeMetadata/" {
        return text(200, "v1/\n");
    }
    let Some(rest) = path.strip_prefix(ROOT) else {
        return not_found();
    };
    if rest.is_empty() {
        return redirect(&req.target, &path);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return not_found();
    };
    let wants_directory = rest.is_empty() || rest.ends_with('/');
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let tree = tree();
    let accounts = &tree["instance"]["serviceAccounts"];
    if let ["instance", "service-accounts", account, endpoint] = segments.as_slice()
        && !wants_directory
        && matches!(*endpoint, "token" | "identity")
    {
        if child(accounts, account).is_none() {
            return not_found();
        }
        return if *endpoint == "token" {
            json_response(&json!({
                "access_token": ACCESS_TOKEN,
                "expires_in": TOKEN_LIFETIME,
                "token_type": "Bearer"
            }))
        } else {
            identity(&params)
        };
    }
    let mut node = &tree;
    for s in &segments {
        match child(node, s) {
            Some(next) => node = next,
            None => return not_found(),
        }
    }
    let recursive = param(&params, "recursive").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !is_directory(node) {
        if wants_directory {
            return not_found();
        }
        return if param(&params, "alt") == Some("json") {
            json_response(node)
        } else {
            text(200, leaf_text(node))
        };
    }
    if recursive {
        return json_response(node);
    }
    if !wants_directory {
        return redirect(&req.target, &path);
    }
    // A service account's directory also lists the two endpoints that are not data.
    let extra: &[&str] = match segments.as_slice() {
        ["instance", "service-accounts", _] => &["identity", "token"],
        _ => &[],
    };
    text(200, listing(node, extra))
}

/// A directory asked for without its trailing slash: where Compute Engine sends the client.
fn redirect(target: &str, path: &str) -> Response {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let location = if query.is_empty() {
        format!("{path}/")
    } else {
        format!("{path}/?{query}")
    };
    Response {
        status: 301,
        content_type: "text/html; charset=utf-8",
        headers: vec![("Location", location.clone())],
        body: format!("<a href=\"{location}\">Moved Permanently</a>.\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: vec![("metadata-flavor".into(), "Google".into())],
            body: Vec::new(),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn google_auth_reads_the_default_account_recursively() {
        // What google.auth.compute_engine.Credentials().refresh() asks first.
        let r = handle(&get(
            "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(header(&r, "Metadata-Flavor"), Some("Google"));
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["email"], SERVICE_ACCOUNT);
        assert_eq!(v["aliases"], json!(["default"]));
        assert_eq!(
            v["scopes"][0],
            "https://www.googleapis.com/auth/cloud-platform"
        );
        assert!(v.get("token").is_none(), "the token is not data");
        // By its email too, and without the trailing slash when recursive.
        let by_email = handle(&get(&format!(
            "/computeMetadata/v1/instance/service-accounts/{SERVICE_ACCOUNT}?recursive=true"
        )));
        assert_eq!(by_email.body, r.body);
    }

    #[test]
    fn google_auth_gets_a_token() {
        let r = handle(&get(
            "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform",
        ));
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["access_token"], ACCESS_TOKEN);
        assert_eq!(v["expires_in"], TOKEN_LIFETIME, "a number, not a string");
        assert_eq!(v["token_type"], "Bearer");
        let r = handle(&get(&format!(
            "/computeMetadata/v1/instance/service-accounts/{SERVICE_ACCOUNT}/token"
        )));
        assert_eq!(r.status, 200);
        let r = handle(&get(
            "/computeMetadata/v1/instance/service-accounts/nobody@example.com/token",
        ));
        assert_eq!(r.status, 404);
        let mut post = get("/computeMetadata/v1/instance/service-accounts/default/token");
        post.method = "POST".into();
        assert_eq!(handle(&post).status, 405);
    }

    #[test]
    fn directories_list_and_redirect_without_their_slash() {
        let r = handle(&get(
            "/computeMetadata/v1/instance/service-accounts/default/",
        ));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "aliases\nemail\nidentity\nscopes\ntoken\n")
        );
        let r = handle(&get("/computeMetadata/v1/instance/service-accounts/"));
        assert_eq!(r.body, format!("{SERVICE_ACCOUNT}/\ndefault/\n"));
        let r = handle(&get("/computeMetadata/v1/"));
        assert_eq!(r.body, "instance/\nproject/\nuniverse/\n");
        let r = handle(&get("/computeMetadata/v1/instance/"));
        assert!(
            r.body.contains("network-interfaces/\n") && r.body.contains("service-accounts/\n"),
            "{}",
            r.body
        );
        let r = handle(&get("/computeMetadata/v1/instance/network-interfaces/"));
        assert_eq!(r.body, "0/\n");
        let r = handle(&get(
            "/computeMetadata/v1/instance/service-accounts/default",
        ));
        assert_eq!(r.status, 301);
        assert_eq!(
            header(&r, "Location"),
            Some("/computeMetadata/v1/instance/service-accounts/default/")
        );
        assert_eq!(handle(&get("/computeMetadata/v1")).status, 301);
        assert_eq!(
            handle(&get("/computeMetadata/v1/instance/name/")).status,
            404
        );
    }

    #[test]
    fn leaves_are_text_or_json() {
        let leaf = |p: &str| handle(&get(&format!("/computeMetadata/v1/{p}")));
        let r = leaf("instance/name");
        assert_eq!(
            (r.status, r.content_type, r.body.as_str()),
            (200, "application/text", "gke-default-pool-1a2b3c4d-xyz0")
        );
        assert_eq!(leaf("project/project-id").body, "emulated-project");
        assert_eq!(leaf("project/numeric-project-id").body, "123456789012");
        assert_eq!(leaf("universe/universe-domain").body, "googleapis.com");
        assert_eq!(
            leaf("instance/service-accounts/default/email").body,
            SERVICE_ACCOUNT
        );
        assert_eq!(
            leaf("instance/service-accounts/default/aliases").body,
            "default\n"
        );
        assert_eq!(leaf("instance/network-interfaces/0/ip").body, "10.132.0.23");
        assert_eq!(leaf("instance/attributes/cluster-name").body, "gke-default");
        let r = leaf("instance/name?alt=json");
        assert_eq!(
            (r.content_type, r.body.as_str()),
            ("application/json", "\"gke-default-pool-1a2b3c4d-xyz0\"")
        );
        let r = leaf("?recursive=true");
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["project"]["numericProjectId"], 123456789012u64);
        assert_eq!(v["instance"]["networkInterfaces"][0]["mtu"], 1460);
        assert_eq!(leaf("instance/nothing").status, 404);
        assert_eq!(handle(&get("/computeMetadata/")).body, "v1/\n");
    }

    #[test]
    fn identity_tokens_need_an_audience() {
        let base = "/computeMetadata/v1/instance/service-accounts/default/identity";
        let r = handle(&get(base));
        assert_eq!(r.status, 400);
        assert!(r.body.contains("audience"));
        let r = handle(&get(&format!(
            "{base}?audience=https%3A%2F%2Fexample.com&format=full"
        )));
        assert_eq!(r.status, 200);
        let parts: Vec<&str> = r.body.split('.').collect();
        assert_eq!(parts.len(), 3, "{}", r.body);
        assert!(parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }));
    }

    #[test]
    fn base64url_matches_rfc4648() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(raw.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
