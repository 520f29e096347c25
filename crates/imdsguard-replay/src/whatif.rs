//! `imdsguard policy whatif`: the flows a Hubble server (the agent, or Relay) holds now, judged
//! under candidate policies as if they were enforced. It answers "what would enforcing these
//! break": a candidate's audit annotation (`policy.imdsguard.io/audit-mode`) is ignored, and so
//! is audit mode per endpoint, because the question is what enforcement would drop. A flow the
//! agent let through in audit mode (verdict AUDIT) counts as allowed before: if the candidates
//! deny it, enforcing them breaks it.

use crate::{GroupBy, Inputs, Replay, Report, TextOptions};
use imdsguard_flow::observer::GetFlowsRequest;
use imdsguard_hubble_server::client::{ClientError, ClientOptions};
use imdsguard_manifest::Source;
use imdsguard_policy::endpoints_file::EndpointsFile;
use imdsguard_policy::report::repository;
use imdsguard_policy::{DecodeOptions, Decoded, EngineOptions, Repository, decode_sources};
use std::io::{self, Write};

/// Why the server's flows could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error("reading flows from {server}")]
    Flows {
        server: String,
        #[source]
        source: ClientError,
    },
    #[error("writing the report")]
    Write(#[from] io::Error),
}

/// How `policy whatif` asks and answers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The server's last N flows; `None`: every flow its ring holds.
    pub last: Option<u64>,
    pub group_by: GroupBy,
    /// Also list unchanged groups and when each was seen.
    pub details: bool,
    /// JSON instead of text.
    pub json: bool,
}

/// `imdsguard policy whatif`: decodes the candidates (invalid objects are reported on `warn`
/// and left out, as `policy check` words them), judges the server's flows under them as
/// enforced, and writes the report to `out`. Returns whether enforcing them would break
/// something that passed.
pub async fn run(
    client: &ClientOptions,
    candidates: &[Source],
    opts: Options,
    out: &mut impl Write,
    warn: &mut impl Write,
) -> Result<bool, WhatIfError> {
    let mut decoded = decode_sources(candidates, &DecodeOptions::default());
    for e in &decoded.errors {
        writeln!(warn, "{e} (object ignored)")?;
    }
    let ignored = enforce_all(&mut decoded);
    let repo = repository(&decoded, &EndpointsFile::default(), enforcing());
    let w = judge_server(client, opts.last, repo, opts.group_by, ignored).await?;
    let inputs = Inputs {
        flows: &client.server,
        policies: decoded.policies.len(),
        cidr_groups: decoded.groups.len(),
    };
    if opts.json {
        w.write_json(out, &inputs)?;
    } else {
        let text = TextOptions {
            details: opts.details,
            group_by: opts.group_by,
        };
        w.write_text(out, &inputs, text)?;
    }
    out.flush()?;
    Ok(w.breaks())
}

/// What `whatif` judged and what it found.
#[derive(Debug, Clone)]
pub struct WhatIf {
    pub report: Report,
    /// Candidate policies that carried the audit annotation, judged as enforced.
    pub audit_ignored: Vec<String>,
    /// Events the server said it lost while sending (its ring wrapped): the view is partial.
    pub lost_events: u64,
}

impl WhatIf {
    /// Whether enforcing the candidates would refuse a flow that passed (allowed or AUDIT).
    pub fn breaks(&self) -> bool {
        self.report.totals.newly_denied > 0
    }
}

impl WhatIf {
    /// Replay's report, with what whatif adds: candidates judged as enforced, lost events, and
    /// a last line that answers the question.
    pub fn write_text(
        &self,
        out: &mut impl Write,
        inputs: &Inputs,
        opts: TextOptions,
    ) -> io::Result<()> {
        for p in &self.audit_ignored {
            writeln!(
                out,
                "{p}: audit annotation ignored: candidates are judged as enforced"
            )?;
        }
        if self.lost_events > 0 {
            writeln!(
                out,
                "The server lost {} events while sending: the view is partial.",
                self.lost_events
            )?;
        }
        self.report.write_text(out, inputs, opts)?;
        let t = &self.report.totals;
        if self.breaks() {
            let groups = self
                .report
                .groups
                .iter()
                .filter(|g| g.changed && g.key.after.refused() && !g.key.before.refused())
                .count();
            writeln!(
                out,
                "\nEnforcing these policies would deny {} that passed ({} {}).",
                plural(t.newly_denied, "flow", "flows"),
                groups,
                if groups == 1 { "group" } else { "groups" }
            )
        } else {
            writeln!(
                out,
                "\nEnforcing these policies would deny nothing that passed in these {}.",
                plural(t.judged, "flow", "flows")
            )
        }
    }

    /// Replay's JSON document, with `breaks`, `auditIgnored` and `lostEvents`.
    pub fn write_json(&self, out: &mut impl Write, inputs: &Inputs) -> io::Result<()> {
        let doc = serde_json::json!({
            "server": inputs.flows,
            "policies": inputs.policies,
            "cidrGroups": inputs.cidr_groups,
            "breaks": self.breaks(),
            "auditIgnored": self.audit_ignored,
            "lostEvents": self.lost_events,
            "totals": self.report.totals,
            "groups": self.report.groups,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Makes every candidate an enforcing policy; returns the names of those that were in audit
/// mode, so the report can say they were judged as enforced.
pub fn enforce_all(decoded: &mut Decoded) -> Vec<String> {
    let mut names = Vec::new();
    for p in decoded.policies.iter_mut().filter(|p| p.audit) {
        p.audit = false;
        names.push(p.id.to_string());
    }
    names
}

/// The engine options for candidates: enforcing, whatever the agent's own audit settings.
pub fn enforcing() -> EngineOptions {
    EngineOptions {
        audit_mode: false,
        ..Default::default()
    }
}

/// The request for the server's last `last` flows (`None`: every flow its ring holds, as
/// `observe --all` asks), oldest first, without following.
pub fn request(last: Option<u64>) -> GetFlowsRequest {
    GetFlowsRequest {
        number: last.unwrap_or(u64::MAX),
        ..Default::default()
    }
}

/// Judges the server's recent flows under `repo` (the candidates, from [`enforce_all`] and
/// [`enforcing`], and the pods the caller knows).
pub async fn judge_server(
    client: &ClientOptions,
    last: Option<u64>,
    repo: Repository,
    group_by: GroupBy,
    audit_ignored: Vec<String>,
) -> Result<WhatIf, WhatIfError> {
    let mut replay = Replay::new(repo, group_by);
    let lost = client
        .for_each_flow(request(last), |f| replay.observe(f))
        .await
        .map_err(|source| WhatIfError::Flows {
            server: client.server.clone(),
            source,
        })?;
    Ok(WhatIf {
        report: replay.report(),
        audit_ignored,
        lost_events: lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDITED_DENY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: deny-imds
  annotations:
    policy.imdsguard.io/audit-mode: "true"
spec:
  endpointSelector: {}
  egressDeny:
    - toCIDR: [169.254.169.254/32]
"#;

    #[test]
    fn candidates_in_audit_mode_are_judged_as_enforced() {
        let mut decoded = decode_sources(
            &[Source::new("deny.yaml", AUDITED_DENY)],
            &DecodeOptions::default(),
        );
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        assert!(decoded.policies[0].audit, "the annotation is decoded");
        assert_eq!(
            enforce_all(&mut decoded),
            ["CiliumClusterwideNetworkPolicy deny-imds"]
        );
        assert!(!decoded.policies[0].audit);
        assert!(enforce_all(&mut decoded).is_empty());
        assert!(!enforcing().audit_mode);
        assert_eq!(request(None).number, u64::MAX);
        assert_eq!(request(Some(10)).number, 10);
        assert!(!request(None).follow);
    }

    #[test]
    fn the_answer_names_the_container() {
        use imdsguard_flow::observer::GetFlowsResponse;
        use imdsguard_flow::observer::get_flows_response::ResponseTypes;
        use imdsguard_hubble_proto::process::{self, ProcessInfo};
        let mut decoded = decode_sources(
            &[Source::new("deny.yaml", AUDITED_DENY)],
            &DecodeOptions::default(),
        );
        let ignored = enforce_all(&mut decoded);
        let repo = repository(&decoded, &EndpointsFile::default(), enforcing());
        let mut replay = Replay::new(repo, GroupBy::Workload);
        let seed = include_str!("../../../tests/flows/seed.jsonl");
        let first = seed.lines().next().expect("a seed flow");
        let resp: GetFlowsResponse = serde_json::from_str(first).expect("json");
        let Some(ResponseTypes::Flow(mut f)) = resp.response_types else {
            panic!("a flow line");
        };
        process::set(
            &mut f,
            &ProcessInfo {
                container: "istio-proxy".into(),
                process: "envoy".into(),
                pid: 4242,
                uid: Some(1337),
            },
        );
        replay.observe(&f);
        let w = WhatIf {
            report: replay.report(),
            audit_ignored: ignored,
            lost_events: 0,
        };
        assert!(w.breaks());
        let inputs = Inputs {
            flows: "localhost:4245",
            policies: 1,
            cidr_groups: 0,
        };
        let mut text = Vec::new();
        w.write_text(
            &mut text,
            &inputs,
            TextOptions {
                details: false,
                group_by: GroupBy::Workload,
            },
        )
        .expect("writes");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.contains(
                "  go-webapp/go-webapp [istio-proxy] → 169.254.169.254:80: allowed → DENIED (deny-imds), 1 flow\n"
            ),
            "{text}"
        );
        let mut json = Vec::new();
        w.write_json(&mut json, &inputs).expect("writes");
        let doc: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(doc["groups"][0]["container"], "istio-proxy");
        assert_eq!(doc["groups"][0]["source"], "go-webapp/go-webapp");
    }
}
