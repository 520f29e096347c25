//! The flow table: the columns Hubble UI shows for a flow, and which flows a table shows.
//!
//! A [`FlowSearch`] is `hubble observe`'s filter flags (by long name, in order, `not` included:
//! the same FlowFilter semantics as the Hubble API) plus a free text that must appear, ignoring
//! ASCII case, in a pod, namespace or workload name, an IP address, a DNS name, an HTTP URL or a
//! DNS query of the flow, or the container or process name imdsguard attributed it to, and
//! optionally only flows to or from a metadata endpoint.

use crate::peer::{Ends, Peer, Sides};
use imdsguard_flow::filter::{FilterError, FlowFilters};
use imdsguard_flow::filterflags::{FilterBuilder, flag_takes_value};
use imdsguard_flow::flow::{Endpoint, Flow, L7FlowType, Verdict, layer7};
use imdsguard_flow::printer;
use imdsguard_hubble_proto::process;
use imdsguard_hubble_proto::wkt::Timestamp;
use serde::Serialize;

/// One table row (all strings as shown; the whole flow travels next to it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    pub time: Option<Timestamp>,
    /// `namespace/pod`, or the node's name (`host`, `world`, `IMDS 169.254.169.254` …).
    pub source: String,
    pub source_ip: String,
    pub source_identity: u32,
    pub destination: String,
    pub destination_ip: String,
    pub destination_identity: u32,
    /// `TCP/80`, `UDP/53`, `ICMPv4`, or empty.
    pub port: String,
    /// `GET /metadata/instance?…`, `200 GET /… (8ms)`, `DNS example.com. A` or empty.
    pub l7: String,
    /// Hubble's verdict name: FORWARDED, DROPPED, AUDIT, REDIRECTED …
    pub verdict: String,
    /// `hubble observe`'s type column: `policy-verdict:all EGRESS`, `to-network`,
    /// `http-request` …
    pub r#type: String,
    /// `Policy denied by denylist` … for drops, else empty.
    pub drop_reason: String,
    /// `ALLOWED BY azure-imds-allow (CiliumClusterwideNetworkPolicy)` … for policy verdicts.
    pub policy: String,
    pub summary: String,
    /// The flow goes to (or comes from) a metadata endpoint.
    pub imds: bool,
    /// Who in the pod sent it, from imdsguard's process information (`Flow.extensions`), and
    /// the socket and cgroup from Hubble's own fields. Left out of the JSON when unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The process name (comm): chosen by the process, so the page shows it as text only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub process: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Decimal, as protojson writes 64-bit numbers (JavaScript numbers cannot hold them all).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub socket_cookie: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cgroup_id: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A 64-bit id as text, empty when 0 (unknown).
fn id_text(n: u64) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

fn side_name(ep: Option<&Endpoint>, peer: &Peer) -> String {
    match ep {
        Some(e) if !e.pod_name.is_empty() => format!("{}/{}", e.namespace, e.pod_name),
        _ => peer.label.clone(),
    }
}

/// The path and query of a URL (`http://host:80/p?q` → `/p?q`).
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

fn l7_info(f: &Flow) -> String {
    let Some(l7) = &f.l7 else {
        return String::new();
    };
    let response = l7.r#type == L7FlowType::Response as i32;
    match &l7.record {
        Some(layer7::Record::Http(h)) if response => format!(
            "{} {} {} ({}ms)",
            h.code,
            h.method,
            path_of(&h.url),
            l7.latency_ns / 1_000_000
        ),
        Some(layer7::Record::Http(h)) => format!("{} {}", h.method, path_of(&h.url)),
        Some(layer7::Record::Dns(d)) => {
            let mut s = format!("DNS {} {}", d.query, d.qtypes.join(","));
            if response {
                s.push_str(&format!(" → {}", d.ips.join(",")));
            }
            s
        }
        _ => String::new(),
    }
}

impl FlowRow {
    pub fn of(f: &Flow) -> FlowRow {
        let Ends {
            src,
            dst,
            sip,
            dip,
            protocol,
            dport,
            ..
        } = Ends::of(f);
        let port = match (protocol, dport) {
            ("", _) => String::new(),
            (p, 0) => p.to_owned(),
            (p, port) => format!("{p}/{port}"),
        };
        let verdict = Verdict::try_from(f.verdict).unwrap_or(Verdict::Unknown);
        let token = printer::verdict_token(f, true);
        let policy = if token.contains(" BY ") || token == "ALLOWED" || token == "DENIED" {
            token
        } else {
            String::new()
        };
        #[allow(deprecated)]
        let drop_reason = if f.drop_reason != 0 {
            imdsguard_flow::names::drop_reason_text(f.drop_reason).into_owned()
        } else {
            String::new()
        };
        let who = process::get(f).unwrap_or_default();
        FlowRow {
            time: f.time,
            source: side_name(f.source.as_ref(), &src),
            source_ip: sip.to_owned(),
            source_identity: f.source.as_ref().map_or(0, |e| e.identity),
            destination: side_name(f.destination.as_ref(), &dst),
            destination_ip: dip.to_owned(),
            destination_identity: f.destination.as_ref().map_or(0, |e| e.identity),
            port,
            l7: l7_info(f),
            verdict: verdict.as_str_name().to_owned(),
            r#type: printer::flow_type(f),
            drop_reason,
            policy,
            summary: printer::summary(f),
            imds: src.metadata.is_some() || dst.metadata.is_some(),
            container: who.container,
            process: who.process,
            pid: who.pid,
            uid: who.uid,
            socket_cookie: id_text(f.socket_cookie),
            cgroup_id: id_text(f.cgroup_id),
        }
    }
}

/// Which flows a table shows (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FlowSearch {
    filters: FlowFilters,
    /// Lower-cased.
    text: String,
    metadata_only: bool,
}

/// Why a search was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("{0} (filters are `hubble observe` flags by long name, e.g. verdict=DROPPED)")]
    Filter(#[from] FilterError),
    #[error("imds: expected true or false, got {0:?}")]
    Imds(String),
}

impl FlowSearch {
    /// `(key, value)` pairs in order: `q` is the free text, `imds=true` keeps only calls to a
    /// metadata endpoint, every other key is a `hubble observe` filter flag (`namespace`, `verdict`, `type`, `to-ip`, `not` …). Flags that take a value are
    /// ignored when the value is empty, so a form can send every field.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FlowSearch, SearchError> {
        let mut builder = FilterBuilder::new();
        let mut text = String::new();
        let mut metadata_only = false;
        for (key, value) in pairs {
            if key == "q" {
                text = value.trim().to_ascii_lowercase();
                continue;
            }
            if key == "imds" {
                metadata_only = match value {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => return Err(SearchError::Imds(other.to_owned())),
                };
                continue;
            }
            if value.is_empty() && flag_takes_value(key) == Some(true) {
                continue;
            }
            builder.add(key, value)?;
        }
        let (white, black) = builder.build()?;
        Ok(FlowSearch {
            filters: FlowFilters::new(&white, &black)?,
            text,
            metadata_only,
        })
    }

    pub fn matches(&self, f: &Flow) -> bool {
        self.filters.matches(f)
            && (self.text.is_empty() || text_matches(f, &self.text))
            && (!self.metadata_only || Sides::of(f).callee.metadata.is_some())
    }
}

/// `needle` (lower-case) appears in `hay`, ignoring ASCII case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.len() <= h.len()
        && h.windows(n.len())
            .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

fn text_matches(f: &Flow, needle: &str) -> bool {
    let hit = |s: &str| contains_ci(s, needle);
    let endpoint = |e: &Option<Endpoint>| {
        e.as_ref().is_some_and(|e| {
            hit(&e.pod_name) || hit(&e.namespace) || e.workloads.iter().any(|w| hit(&w.name))
        })
    };
    if endpoint(&f.source) || endpoint(&f.destination) {
        return true;
    }
    if let Some(ip) = &f.ip
        && (hit(&ip.source) || hit(&ip.destination))
    {
        return true;
    }
    if f.source_names
        .iter()
        .chain(&f.destination_names)
        .any(|n| hit(n))
    {
        return true;
    }
    let l7 = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(layer7::Record::Http(h)) => hit(&h.url),
        Some(layer7::Record::Dns(d)) => hit(&d.query),
        _ => false,
    };
    l7 || process::get(f).is_some_and(|p| hit(&p.container) || hit(&p.process))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::seed_flows;

    fn search(pairs: &[(&str, &str)]) -> Vec<usize> {
        let s = FlowSearch::parse(pairs.iter().copied()).unwrap();
        seed_flows()
            .iter()
            .enumerate()
            .filter(|(_, f)| s.matches(f))
            .map(|(i, _)| i + 1)
            .collect()
    }

    #[test]
    fn rows_show_hubble_ui_columns() {
        let flows = seed_flows();
        let r = FlowRow::of(&flows[0]);
        assert_eq!(r.source, "go-webapp/go-webapp-847857f68-2qlnd");
        assert_eq!(r.destination, "IMDS 169.254.169.254");
        assert_eq!(r.port, "TCP/80");
        assert_eq!(r.verdict, "FORWARDED");
        assert_eq!(r.r#type, "policy-verdict:all EGRESS");
        assert_eq!(r.policy, "ALLOWED");
        assert!(r.imds);
        let r = FlowRow::of(&flows[4]);
        assert_eq!(r.verdict, "DROPPED");
        assert_eq!(r.drop_reason, "Policy denied by denylist");
        assert_eq!(
            r.policy,
            "DENIED BY azure-imds-deny (CiliumClusterwideNetworkPolicy)"
        );
        let r = FlowRow::of(&flows[6]);
        assert_eq!(r.source, "host");
        assert_eq!(r.r#type, "to-network");
        let r = FlowRow::of(&flows[9]);
        assert_eq!(
            r.l7,
            "GET /metadata/identity/oauth2/token?api-version=2021-02-01&resource=https://api.kusto.windows.net"
        );
        assert_eq!(r.r#type, "http-request");
        let r = FlowRow::of(&flows[10]);
        assert!(
            r.l7.starts_with("200 GET /metadata/identity/oauth2/token?"),
            "{}",
            r.l7
        );
        assert!(r.l7.ends_with("(8ms)"), "{}", r.l7);
    }

    #[test]
    fn searches_combine_hubble_filters_and_text() {
        assert_eq!(search(&[]).len(), 12);
        assert_eq!(search(&[("verdict", "DROPPED")]), [5, 6]);
        assert_eq!(search(&[("namespace", "logging")]), [8, 9, 10, 11, 12]);
        assert_eq!(search(&[("type", "l7")]), [10, 11]);
        assert_eq!(search(&[("type", "policy-verdict")]), [1, 5, 8]);
        assert_eq!(search(&[("q", "L5S48")]), [5, 6]);
        assert_eq!(search(&[("q", "10.10.0.6")]), [7]);
        assert_eq!(search(&[("q", "kusto")]), [10, 11]);
        assert_eq!(search(&[("imds", "true")]).len(), 12);
        assert!(FlowSearch::parse([("imds", "yes")]).is_err());
        let mut elsewhere = seed_flows()[0].clone();
        elsewhere.ip.as_mut().unwrap().destination = "10.9.9.9".into();
        assert!(
            !FlowSearch::parse([("imds", "true")])
                .unwrap()
                .matches(&elsewhere)
        );
        assert!(
            FlowSearch::parse([("imds", "false")])
                .unwrap()
                .matches(&elsewhere)
        );
        assert_eq!(
            search(&[("q", "go-webapp"), ("verdict", "FORWARDED")]),
            [1, 2, 3, 4]
        );
        assert_eq!(
            search(&[("not", ""), ("namespace", "go-webapp"), ("q", "")]).len(),
            6
        );
        // Empty values are "not set", so a form can send every field.
        assert_eq!(search(&[("namespace", ""), ("verdict", "")]).len(), 12);
        let err = FlowSearch::parse([("verdict", "sideways")]).unwrap_err();
        assert!(err.to_string().contains("verdict"), "{err}");
        assert!(FlowSearch::parse([("no-such-flag", "x")]).is_err());
    }

    #[test]
    fn rows_name_the_container_and_process_when_flows_say() {
        use crate::testdata::{HOSTILE_COMM, attributed_seed_flows};
        let flows = attributed_seed_flows();
        let r = FlowRow::of(&flows[0]);
        assert_eq!(r.container, "istio-proxy");
        assert_eq!(r.process, "envoy");
        assert_eq!(r.pid, 4242);
        assert_eq!(r.uid, Some(1337));
        assert_eq!(r.socket_cookie, "1099511627783");
        assert_eq!(r.cgroup_id, "120");
        // The columns themselves do not change.
        assert_eq!(r.source, "go-webapp/go-webapp-847857f68-2qlnd");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["container"], "istio-proxy");
        assert_eq!(json["socket_cookie"], "1099511627783");
        // uid 0 (root) is a uid, not "unknown"; the name is served as it is, for the page to
        // show as text.
        let r = FlowRow::of(&flows[4]);
        assert_eq!((r.process.as_str(), r.uid), (HOSTILE_COMM, Some(0)));
        assert_eq!(serde_json::to_value(&r).unwrap()["uid"], 0);
        // Without process information the row's JSON is what it was.
        let plain = serde_json::to_value(FlowRow::of(&seed_flows()[0])).unwrap();
        for key in [
            "container",
            "process",
            "pid",
            "uid",
            "socket_cookie",
            "cgroup_id",
        ] {
            assert!(plain.get(key).is_none(), "{key} in {plain}");
        }
        let fluent = FlowRow::of(&flows[9]);
        assert_eq!(fluent, FlowRow::of(&seed_flows()[9]));
    }

    #[test]
    fn the_free_text_finds_containers_and_processes() {
        use crate::testdata::attributed_seed_flows;
        let found = |q: &str| {
            let s = FlowSearch::parse([("q", q)]).unwrap();
            attributed_seed_flows()
                .iter()
                .enumerate()
                .filter(|(_, f)| s.matches(f))
                .map(|(i, _)| i + 1)
                .collect::<Vec<_>>()
        };
        assert_eq!(found("ENVOY"), [1, 2, 3, 4]);
        assert_eq!(found("istio-proxy"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(found("<img"), [5, 6]);
        assert!(found("sidecar").is_empty());
    }
}
