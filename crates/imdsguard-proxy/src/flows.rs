//! The proxy's access log as Hubble L7 flows: `http-request` and `http-response`
//! (docs/hubble.md#flow-fields): `HTTP/1.1 GET http://169.254.169.254:80/metadata/instance` and
//! `HTTP/1.1 200 3ms (GET http://…)`.

use crate::http1::Request;
use imdsguard_hubble_proto::flow::{
    CiliumEventType, DropReason, Endpoint, Flow, FlowType, Http, HttpHeader, Ip, IpVersion,
    L7FlowType, Layer4, Layer7, Policy, Tcp, TrafficDirection, Verdict, layer4, layer7,
};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_policy::mapstate::Origin;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

fn policy_of(origin: &Origin) -> Option<Policy> {
    match origin {
        Origin::Rule { policy, .. } => Some(Policy {
            name: policy.name.to_string(),
            namespace: policy.namespace.to_string(),
            kind: policy.kind.as_str().to_owned(),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Cilium's monitor type for L7 access logs.
const MONITOR_ACCESS_LOG: i32 = 129;

/// One request as the proxy saw it, with what the flows need.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub client: SocketAddr,
    /// The original destination.
    pub server: SocketAddr,
    pub source: &'a Endpoint,
    pub destination: &'a Endpoint,
    pub request: &'a Request,
    pub node_name: &'a str,
    /// The rules that allowed the request (empty when denied); turned into the flow's policies
    /// only when a flow is built, after the request has gone on.
    pub allowed_by: &'a [Arc<Origin>],
    /// Audit-mode policies whose HTTP rules would refuse the forwarded request: its
    /// `http-request` flow is then AUDIT, naming them (docs/proxy.md).
    pub audited_by: &'a [Arc<Origin>],
}

impl Exchange<'_> {
    pub fn url(&self) -> String {
        format!("http://{}{}", self.server, self.request.http.path)
    }

    fn http(&self, code: u32) -> Http {
        let mut headers: Vec<HttpHeader> = self
            .request
            .http
            .headers
            .iter()
            .map(|(k, v)| HttpHeader {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        headers.sort_by(|a, b| a.key.cmp(&b.key));
        Http {
            code,
            method: self.request.http.method.clone(),
            url: self.url(),
            protocol: format!("HTTP/1.{}", self.request.minor_version),
            headers,
        }
    }

    // `Summary` is deprecated in Hubble's proto, but the CLI prints it.
    #[allow(deprecated)]
    fn flow(&self, reply: bool, verdict: Verdict, l7: Layer7, summary: String) -> Flow {
        let (src, dst, s, d) = if reply {
            (self.server, self.client, self.destination, self.source)
        } else {
            (self.client, self.server, self.source, self.destination)
        };
        Flow {
            time: Some(Timestamp::now()),
            verdict: verdict as i32,
            ip: Some(Ip {
                source: src.ip().to_string(),
                destination: dst.ip().to_string(),
                ip_version: if src.is_ipv6() {
                    IpVersion::IPv6
                } else {
                    IpVersion::IPv4
                } as i32,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: u32::from(src.port()),
                    destination_port: u32::from(dst.port()),
                    flags: None,
                })),
            }),
            source: Some(s.clone()),
            destination: Some(d.clone()),
            r#type: FlowType::L7 as i32,
            node_name: self.node_name.to_owned(),
            l7: Some(l7),
            event_type: Some(CiliumEventType {
                r#type: MONITOR_ACCESS_LOG,
                sub_type: 0,
            }),
            traffic_direction: TrafficDirection::Egress as i32,
            is_reply: Some(pbjson_types::BoolValue { value: reply }),
            egress_allowed_by: self
                .allowed_by
                .iter()
                .filter_map(|o| policy_of(o))
                .collect(),
            summary,
            ..Default::default()
        }
    }

    /// `http-request FORWARDED|DROPPED (HTTP/1.1 GET http://…)`; `http-request AUDIT` when
    /// forwarded although an audit-mode policy would refuse it (Hubble has no L7 audit of its
    /// own: the verdict is the L3/L4 one, with the audit policies as `egress_denied_by`).
    pub fn request_flow(&self, forwarded: bool) -> Flow {
        let http = self.http(0);
        let summary = format!("{} {} {}", http.protocol, http.method, http.url);
        let audited = forwarded && !self.audited_by.is_empty();
        let mut f = self.flow(
            false,
            if audited {
                Verdict::Audit
            } else if forwarded {
                Verdict::Forwarded
            } else {
                Verdict::Dropped
            },
            Layer7 {
                r#type: L7FlowType::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Http(http)),
            },
            summary,
        );
        if audited {
            f.egress_denied_by = self
                .audited_by
                .iter()
                .filter_map(|o| policy_of(o))
                .collect();
        }
        f
    }

    /// `http-response FORWARDED (HTTP/1.1 200 3ms (GET http://…))`.
    pub fn response_flow(&self, status: u16, latency_ns: u64) -> Flow {
        let http = self.http(u32::from(status));
        let summary = format!(
            "{} {} {}ms ({} {})",
            http.protocol,
            status,
            latency_ns / 1_000_000,
            http.method,
            http.url
        );
        self.flow(
            true,
            Verdict::Forwarded,
            Layer7 {
                r#type: L7FlowType::Response as i32,
                latency_ns,
                record: Some(layer7::Record::Http(http)),
            },
            summary,
        )
    }
}

/// A connection the proxy answered before it had a request to judge: a malformed head, a head
/// that did not arrive in time, a connection over a limit. Its flows carry no method or path.
#[derive(Debug, Clone)]
pub struct Unjudged<'a> {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub source: &'a Endpoint,
    pub destination: &'a Endpoint,
    pub node_name: &'a str,
}

impl Unjudged<'_> {
    fn flows(&self, build: impl FnOnce(&Exchange<'_>) -> Flow) -> Flow {
        let placeholder = Request {
            http: Default::default(),
            target: String::new(),
            minor_version: 1,
            body: crate::http1::Body::None,
            close: true,
            head_len: 0,
        };
        build(&Exchange {
            client: self.client,
            server: self.server,
            source: self.source,
            destination: self.destination,
            request: &placeholder,
            node_name: self.node_name,
            allowed_by: &[],
            audited_by: &[],
        })
    }

    /// `http-request DROPPED` with the reason as the summary: `HTTP request refused: <reason>`.
    #[allow(deprecated)]
    pub fn refused(&self, reason: &dyn fmt::Display) -> Flow {
        let mut f = self.flows(|x| x.request_flow(false));
        f.summary = format!("HTTP request refused: {reason}");
        f
    }

    /// `refused`, for a connection over a connection limit. The drop reason is Cilium's
    /// `DROP_RATE_LIMITED`: `hubble_drop_total` counts by drop reason, so limit hits count apart
    /// from policy denials and malformed requests, whose flows leave it unset
    /// (`DROP_REASON_UNKNOWN`).
    #[allow(deprecated)]
    pub fn limited(&self, limit: &dyn fmt::Display) -> Flow {
        let mut f = self.refused(limit);
        f.drop_reason_desc = DropReason::DropRateLimited as i32;
        // Deprecated, but Cilium still fills it.
        f.drop_reason = DropReason::DropRateLimited as u32;
        f
    }

    /// `http-response FORWARDED (HTTP/1.1 408 10000ms (<why>))`: what the proxy answered itself.
    /// The response flow is what `hubble_http_requests_total` counts, by status.
    #[allow(deprecated)]
    pub fn answered(&self, status: u16, latency_ns: u64, why: &dyn fmt::Display) -> Flow {
        let mut f = self.flows(|x| x.response_flow(status, latency_ns));
        f.summary = format!("HTTP/1.1 {status} {}ms ({why})", latency_ns / 1_000_000);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{Limits, Parse, parse_request};
    use imdsguard_flow::printer::{PrintOptions, compact};

    #[test]
    fn request_and_response_print_as_hubble_does() {
        let Parse::Done(req) = parse_request(
            b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n",
            "169.254.169.254:80",
            &Limits::default(),
        ) else {
            panic!("request")
        };
        let x = Exchange {
            client: "10.244.1.17:40132".parse().expect("addr"),
            server: "169.254.169.254:80".parse().expect("addr"),
            source: &Endpoint {
                identity: 14226,
                namespace: "go-webapp".into(),
                pod_name: "go-webapp-847857f68-2qlnd".into(),
                ..Default::default()
            },
            destination: &Endpoint {
                identity: 16_777_217,
                ..Default::default()
            },
            request: &req,
            node_name: "n",
            allowed_by: &[],
            audited_by: &[],
        };
        let line = compact(&x.request_flow(true), &PrintOptions::default());
        assert!(
            line.ends_with(
                ": go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) -> 169.254.169.254:80 (ID:16777217) \
                 http-request FORWARDED (HTTP/1.1 GET http://169.254.169.254:80/metadata/instance?api-version=2021-02-01)\n"
            ),
            "{line}"
        );
        let line = compact(&x.response_flow(200, 3_400_000), &PrintOptions::default());
        assert!(
            line.ends_with(
                ": go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) <- 169.254.169.254:80 (ID:16777217) \
                 http-response FORWARDED (HTTP/1.1 200 3ms (GET http://169.254.169.254:80/metadata/instance?api-version=2021-02-01))\n"
            ),
            "{line}"
        );
        let line = compact(&x.request_flow(false), &PrintOptions::default());
        assert!(
            line.contains("http-request DROPPED (HTTP/1.1 GET "),
            "{line}"
        );
    }

    #[test]
    fn an_audited_request_is_forwarded_with_verdict_audit_naming_the_policy() {
        let Parse::Done(req) = parse_request(
            b"GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            "169.254.169.254:80",
            &Limits::default(),
        ) else {
            panic!("request")
        };
        let origin = Arc::new(Origin::Rule {
            policy: imdsguard_policy::PolicyRef {
                kind: imdsguard_policy::PolicyKind::CiliumNetworkPolicy,
                namespace: "default".into(),
                name: "imds-paths".into(),
            },
            rule: 0,
            log: None,
        });
        let (s, d) = (Endpoint::default(), Endpoint::default());
        let x = Exchange {
            client: "10.244.1.17:40132".parse().expect("addr"),
            server: "169.254.169.254:80".parse().expect("addr"),
            source: &s,
            destination: &d,
            request: &req,
            node_name: "n",
            allowed_by: &[],
            audited_by: std::slice::from_ref(&origin),
        };
        let f = x.request_flow(true);
        assert_eq!(f.verdict, Verdict::Audit as i32);
        assert_eq!(f.egress_denied_by[0].name, "imds-paths");
        // A refused request stays DROPPED whatever audits it.
        assert_eq!(x.request_flow(false).verdict, Verdict::Dropped as i32);
    }

    #[test]
    fn answers_without_a_request_say_why() {
        let (source, destination) = (Endpoint::default(), Endpoint::default());
        let u = Unjudged {
            client: "10.244.1.17:40132".parse().expect("addr"),
            server: "169.254.169.254:80".parse().expect("addr"),
            source: &source,
            destination: &destination,
            node_name: "n",
        };
        let limited = u.limited(&"too many connections from this pod (16 open)");
        assert_eq!(limited.verdict, Verdict::Dropped as i32);
        assert_eq!(limited.drop_reason_desc, DropReason::DropRateLimited as i32);
        let line = compact(&limited, &PrintOptions::default());
        assert!(
            line.contains(
                "http-request DROPPED (HTTP request refused: too many connections from this pod (16 open))"
            ),
            "{line}"
        );
        // Refusals that are not limit hits keep Cilium's unset drop reason.
        assert_eq!(u.refused(&"request head timed out").drop_reason_desc, 0);
        let line = compact(
            &u.answered(408, 10_000_000_000, &"request head timed out"),
            &PrintOptions::default(),
        );
        assert!(
            line.contains(
                "http-response FORWARDED (HTTP/1.1 408 10000ms (request head timed out))"
            ),
            "{line}"
        );
    }
}
