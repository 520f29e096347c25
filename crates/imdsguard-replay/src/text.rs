//! The report as `imdsguard replay` prints it: a text summary for people, JSON for programs.

use crate::{Group, GroupBy, Report};
use std::io::{self, Write};

/// Without details, the text lists this many changed groups, the largest first.
const SUMMARY_CHANGES: usize = 20;

/// What was replayed, as the report names it.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The flows' file as given (`-` for stdin).
    pub flows: &'a str,
    pub policies: usize,
    pub cidr_groups: usize,
}

/// How much the text says.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Every changed group, the unchanged ones, and when and how each was seen.
    pub details: bool,
    /// How the groups were made, for the hint after a cut list.
    pub group_by: GroupBy,
}

impl Report {
    /// One JSON document: the inputs, the totals and every group.
    pub fn write_json(&self, out: &mut impl Write, inputs: &Inputs) -> io::Result<()> {
        let doc = serde_json::json!({
            "flows": inputs.flows,
            "policies": inputs.policies,
            "cidrGroups": inputs.cidr_groups,
            "totals": self.totals,
            "groups": self.groups,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
    }

    /// The totals, then the changes (the largest 20 unless `details`).
    pub fn write_text(
        &self,
        out: &mut impl Write,
        inputs: &Inputs,
        opts: TextOptions,
    ) -> io::Result<()> {
        let t = &self.totals;
        writeln!(
            out,
            "Replayed {} flows from {} under {} and {}.",
            t.flows,
            inputs.flows,
            count(inputs.policies, "policy", "policies"),
            count(inputs.cidr_groups, "CIDR group", "CIDR groups"),
        )?;
        let s = &t.skipped;
        let mut skipped = Vec::new();
        if s.replies > 0 {
            skipped.push(format!(
                "{}, which follow their request",
                count(s.replies, "reply or response", "replies and responses")
            ));
        }
        if s.not_policy_drops > 0 {
            skipped.push(format!(
                "{} for reasons other than policy",
                count(s.not_policy_drops, "drop", "drops")
            ));
        }
        if s.unjudgeable > 0 {
            skipped.push(format!(
                "{} without addresses and ports, or DNS/Kafka refusals",
                s.unjudgeable
            ));
        }
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} skipped: {})", s.total(), skipped.join("; "))
        };
        writeln!(out, "  judged:        {}{skipped}", t.judged)?;
        writeln!(out, "  changed:       {}", t.changed)?;
        writeln!(out, "  newly denied:  {}", t.newly_denied)?;
        writeln!(out, "  newly allowed: {}", t.newly_allowed)?;
        let changed: Vec<_> = self.groups.iter().filter(|g| g.changed).collect();
        if !changed.is_empty() {
            writeln!(out, "\nChanges:")?;
        }
        let shown = if opts.details {
            changed.len()
        } else {
            changed.len().min(SUMMARY_CHANGES)
        };
        for g in &changed[..shown] {
            writeln!(
                out,
                "  {}: {} → {} ({}), {}",
                subject(g),
                g.key.before,
                g.key.after,
                g.key.decided_by,
                count(g.flows, "flow", "flows")
            )?;
            if opts.details {
                detail(out, g)?;
            }
        }
        if shown < changed.len() {
            let hint = match opts.group_by {
                GroupBy::Pod => "; --group-by workload merges replicas",
                GroupBy::Workload => "",
            };
            writeln!(
                out,
                "  … and {} more (--details lists them all{hint})",
                changed.len() - shown
            )?;
        }
        if opts.details {
            let same: Vec<_> = self.groups.iter().filter(|g| !g.changed).collect();
            if !same.is_empty() {
                writeln!(out, "\nUnchanged:")?;
            }
            for g in same {
                writeln!(
                    out,
                    "  {}: {} ({}), {}",
                    subject(g),
                    g.key.after,
                    g.key.decided_by,
                    count(g.flows, "flow", "flows")
                )?;
                detail(out, g)?;
            }
        } else if self.groups.iter().any(|g| !g.changed) {
            writeln!(
                out,
                "\n--details lists the {} groups whose verdict stays the same.",
                self.groups.iter().filter(|g| !g.changed).count()
            )?;
        }
        Ok(())
    }
}

/// `1 policy`, `2 policies`.
fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str, many: &str) -> String {
    let word = if n == N::from(1) { one } else { many };
    format!("{n} {word}")
}

/// `source [container] → destination METHOD /path`.
fn subject(g: &Group) -> String {
    let mut s = g.key.source.clone();
    if let Some(c) = &g.key.container {
        s.push_str(" [");
        // A container name from an endpoints file may hold anything; a terminal must not read
        // it as a control sequence.
        for ch in c.chars() {
            if ch.is_control() {
                s.extend(ch.escape_default());
            } else {
                s.push(ch);
            }
        }
        s.push(']');
    }
    s.push_str(&format!(" → {}", g.key.destination));
    if let Some(route) = &g.key.http {
        s.push_str(&format!(" {route}"));
    }
    s
}

fn detail(out: &mut impl Write, g: &Group) -> io::Result<()> {
    let mut parts = vec![format!("match {}", g.match_type)];
    if let Some(r) = g.drop_reason {
        parts.push(format!("drop reason {r}"));
    }
    if let (Some(a), Some(b)) = (g.first, g.last) {
        parts.push(format!("seen {a} – {b}"));
    }
    if let Some(u) = &g.example_url {
        parts.push(format!("e.g. {u}"));
    }
    writeln!(out, "      {}", parts.join("; "))
}
