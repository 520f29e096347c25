//! `toPorts`: port, range and protocol, and the L7 rules on them (HTTP judged; Kafka, DNS and
//! generic rules validated).

use super::{Cx, R, Scope};
use crate::api::{Direction, PortProtocol, PortRule, PortSpec, Protocol, Section};
use crate::l7::{FullMatch, HeaderMatch, HeaderMismatch, HttpRule, L7Rules};
use imdsguard_manifest::Field;

impl Cx<'_> {
    pub(super) fn port_rules(
        &mut self,
        f: &Field,
        section: Section,
        scope: &Scope,
    ) -> R<Vec<PortRule>> {
        let mut out = Vec::new();
        for pr in f.seq()? {
            let known: &[&str] = if section.is_deny() {
                &["ports"]
            } else {
                &[
                    "ports",
                    "rules",
                    "serverNames",
                    "terminatingTLS",
                    "originatingTLS",
                    "listener",
                ]
            };
            let m = pr.map(known)?;
            let mut ports = Vec::new();
            if let Some(pf) = m.get("ports") {
                let items = pf.seq()?;
                if items.len() > 40 {
                    return Err(pf.error("too many ports, the max is 40"));
                }
                for p in &items {
                    ports.push(port_protocol(p)?);
                }
            }
            for name in [
                "serverNames",
                "terminatingTLS",
                "originatingTLS",
                "listener",
            ] {
                if let Some(x) = m.get(name) {
                    self.warn(x.pos(), format!("{name} is ignored by imdsguard (no TLS interception or Envoy listeners)"));
                }
            }
            let l7 = match m.get("rules") {
                Some(rf) => self.l7_rules(&rf, &ports, section, scope, m.get("ports"))?,
                None => None,
            };
            out.push(PortRule { ports, l7 });
        }
        Ok(out)
    }

    fn l7_rules(
        &mut self,
        f: &Field,
        ports: &[PortProtocol],
        section: Section,
        scope: &Scope,
        ports_field: Option<Field>,
    ) -> R<Option<L7Rules>> {
        let m = f.map(&["http", "kafka", "dns", "l7proto", "l7"])?;
        let kinds: Vec<&str> = ["http", "kafka", "dns", "l7"]
            .into_iter()
            .filter(|k| m.get_raw(k).is_some())
            .collect();
        if kinds.len() > 1 {
            return Err(f.error(format!(
                "multiple L7 protocol rule types specified in single rule ({})",
                kinds.join(", ")
            )));
        }
        if m.has("l7proto") && kinds.first().is_some_and(|k| *k != "l7") {
            return Err(f.error("l7proto may only be combined with l7 rules"));
        }
        let Some(kind) =
            kinds
                .first()
                .copied()
                .or(if m.has("l7proto") { Some("l7") } else { None })
        else {
            return Ok(None);
        };
        for (i, p) in ports.iter().enumerate() {
            let at = ports_field
                .as_ref()
                .and_then(|pf| pf.seq().ok())
                .and_then(|s| s.get(i).cloned());
            let at = at.as_ref().unwrap_or(f);
            if p.port == PortSpec::Number(0) {
                return Err(at.error("L7 rules can not be used when a port is 0"));
            }
            if kind != "dns" && p.protocol != Protocol::Tcp {
                return Err(at.error(format!(
                    "L7 rules can only apply to TCP (not {}) except for DNS rules",
                    p.protocol.as_str()
                )));
            }
            if kind == "dns"
                && p.end_port
                    .is_some_and(|e| matches!(p.port, PortSpec::Number(n) if e > n))
            {
                return Err(at.error("DNS rules do not support port ranges"));
            }
        }
        if scope.host && !(kind == "dns" && section.direction() == Direction::Egress) {
            return Err(f.error("host policies (nodeSelector) only support L7 DNS rules on egress"));
        }
        let list = m.get_raw(kind);
        Ok(Some(match kind {
            "http" => {
                let mut rules = Vec::new();
                for h in list.map(|l| l.seq()).transpose()?.unwrap_or_default() {
                    rules.push(std::sync::Arc::new(http_rule(&h)?));
                }
                L7Rules::Http(rules)
            }
            "kafka" => {
                let items = list.map(|l| l.seq()).transpose()?.unwrap_or_default();
                for k in &items {
                    k.map(&["role", "apiKey", "apiVersion", "clientID", "topic"])?;
                }
                L7Rules::Kafka(items.len())
            }
            "dns" => {
                if section.direction() == Direction::Ingress {
                    return Err(f.error("DNS rules are not allowed on ingress"));
                }
                if ports.is_empty() {
                    return Err(f.error("DNS rules require ports"));
                }
                let items = list.map(|l| l.seq()).transpose()?.unwrap_or_default();
                for d in &items {
                    let dm = d.map(&["matchName", "matchPattern"])?;
                    if dm.get("matchName").is_none() && dm.get("matchPattern").is_none() {
                        return Err(d.error("one of matchName or matchPattern is required"));
                    }
                }
                L7Rules::Dns(items.len())
            }
            _ => {
                let proto = m
                    .get("l7proto")
                    .ok_or_else(|| f.error("l7 rules require l7proto"))?;
                L7Rules::Generic(proto.str()?.to_owned())
            }
        }))
    }
}

fn port_protocol(f: &Field) -> R<PortProtocol> {
    let m = f.map(&["port", "endPort", "protocol"])?;
    let pf = m.required("port")?;
    let raw = pf.str()?;
    let port = match parse_port_number(raw) {
        Some(n) => PortSpec::Number(n),
        None if raw.chars().all(|c| c.is_ascii_digit()) => {
            return Err(pf.error(format!("unable to parse port {raw:?}: must be 0-65535")));
        }
        None => {
            let name = raw.to_ascii_lowercase();
            if !is_iana_service_name(&name) {
                return Err(pf.error(format!(
                    "{raw:?} is not a valid port number or IANA service name"
                )));
            }
            PortSpec::Named(name)
        }
    };
    let end_port = match m.get("endPort") {
        Some(e) => {
            let n = e.int()?;
            if !(0..=65535).contains(&n) {
                return Err(e.error(format!("endPort {n} is out of range 0-65535")));
            }
            Some(n as u16)
        }
        None => None,
    };
    let protocol = match m.get("protocol") {
        Some(p) => {
            let s = p.str()?;
            match Protocol::parse(s) {
                Some(pr @ (Protocol::Any | Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => pr,
                _ => {
                    return Err(p.error(format!(
                        "{s:?} is not a valid protocol (TCP, UDP, SCTP, ANY); use icmps for ICMP"
                    )));
                }
            }
        }
        None => Protocol::Any,
    };
    Ok(PortProtocol {
        port,
        end_port,
        protocol,
    })
}

/// Go's `strconv.ParseUint(p, 0, 16)`: decimal, `0x` hex, `0o`/leading-0 octal, `0b` binary.
fn parse_port_number(s: &str) -> Option<u16> {
    let s2 = s.replace('_', "");
    let (digits, radix) = if let Some(h) = s2.strip_prefix("0x").or_else(|| s2.strip_prefix("0X")) {
        (h.to_owned(), 16)
    } else if let Some(b) = s2.strip_prefix("0b").or_else(|| s2.strip_prefix("0B")) {
        (b.to_owned(), 2)
    } else if let Some(o) = s2.strip_prefix("0o").or_else(|| s2.strip_prefix("0O")) {
        (o.to_owned(), 8)
    } else if s2.len() > 1 && s2.starts_with('0') {
        (s2[1..].to_owned(), 8)
    } else {
        (s2, 10)
    };
    if digits.is_empty() {
        return None;
    }
    u16::from_str_radix(&digits, radix).ok()
}

/// IANA service names (RFC 6335): 1–15 of `[a-z0-9-]`, at least one letter, no leading, trailing
/// or doubled hyphens.
fn is_iana_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn http_rule(f: &Field) -> R<HttpRule> {
    let m = f.map(&["method", "path", "host", "headers", "headerMatches"])?;
    let regex = |name: &str| -> R<Option<FullMatch>> {
        match m.get(name) {
            Some(v) => {
                let s = v.str()?;
                if s.is_empty() {
                    return Ok(None);
                }
                FullMatch::new(s).map(Some).map_err(|e| v.error(e))
            }
            None => Ok(None),
        }
    };
    let mut rule = HttpRule {
        method: regex("method")?,
        path: regex("path")?,
        host: regex("host")?,
        headers: Vec::new(),
    };
    if let Some(h) = m.get("headers") {
        for s in h.strings()? {
            rule.headers.push(HeaderMatch::from_header_string(&s));
        }
    }
    if let Some(hm) = m.get("headerMatches") {
        for item in hm.seq()? {
            let im = item.map(&["name", "value", "secret", "mismatch"])?;
            let name = im.required("name")?.str()?.to_ascii_lowercase();
            let value = im
                .get("value")
                .map(|v| v.str().map(str::to_owned))
                .transpose()?;
            let mismatch =
                match im.get("mismatch") {
                    Some(mf) => match mf.str()? {
                        "" | "FAIL" => HeaderMismatch::Fail,
                        "LOG" => HeaderMismatch::Log,
                        "ADD" => HeaderMismatch::Add,
                        "DELETE" => HeaderMismatch::Delete,
                        "REPLACE" => HeaderMismatch::Replace,
                        other => return Err(mf.error(format!(
                            "{other:?} is not a valid mismatch action (LOG, ADD, DELETE, REPLACE)"
                        ))),
                    },
                    None => HeaderMismatch::Fail,
                };
            let value = match (value, im.get("secret")) {
                (v, None) => v,
                (_, Some(sf)) => {
                    sf.map(&["namespace", "name"])?;
                    // The secret's value is not visible here: require a value nothing can carry, so
                    // the rule fails closed instead of letting every request through.
                    Some("\u{0}imdsguard: secret values are not supported".to_owned())
                }
            };
            rule.headers.push(HeaderMatch {
                name,
                value,
                mismatch,
            });
        }
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_numbers_follow_go() {
        assert_eq!(parse_port_number("80"), Some(80));
        assert_eq!(parse_port_number("0x50"), Some(80));
        assert_eq!(parse_port_number("65536"), None);
        assert!(is_iana_service_name("port-80"));
        assert!(!is_iana_service_name("80"));
    }
}
