//! What `hubble status` and `hubble list nodes` print, for `imdsguard status --server`: the
//! server's flow counts and, against Relay, its connected nodes, then one row per node
//! (`NAME STATUS AGE FLOWS/S CURRENT/MAX-FLOWS`, with `VERSION ADDRESS TLS` when wide), in
//! the hubble CLI's columns and number formats.

use imdsguard_hubble_proto::observer::{Node, ServerStatusResponse};
use imdsguard_hubble_proto::relay::NodeState;

const NOT_AVAILABLE: &str = "N/A";

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whole seconds as Go prints a `time.Duration`: `45s`, `2m0s`, `1h2m3s`.
fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The lines of `hubble status` after its health check.
pub fn server_status(s: &ServerStatusResponse) -> String {
    let mut out = format!(
        "Current/Max Flows: {}/{}",
        grouped(s.num_flows),
        grouped(s.max_flows)
    );
    if s.max_flows > 0 {
        out += &format!(" ({:.2}%)", s.num_flows as f64 / s.max_flows as f64 * 100.0);
    }
    let uptime = s.uptime_ns as f64 / 1e9;
    let rate = if s.flows_rate > 0.0 {
        format!("{:.2}", s.flows_rate)
    } else if uptime > 0.0 {
        format!("{:.2}", s.seen_flows as f64 / uptime)
    } else {
        NOT_AVAILABLE.to_owned()
    };
    out += &format!("\nFlows/s: {rate}\n");
    // A single agent leaves the node counts unset; Relay fills them.
    if let Some(connected) = &s.num_connected_nodes {
        let unavailable = s.num_unavailable_nodes.as_ref().map_or(0, |u| u.value);
        out += &format!(
            "Connected Nodes: {}/{}\n",
            connected.value,
            connected.value + unavailable
        );
        if unavailable > 0 {
            out += &format!("Unavailable Nodes: {unavailable}\n");
            for name in &s.unavailable_nodes {
                out += &format!("  - {name}\n");
            }
            let listed = s.unavailable_nodes.len() as u32;
            if unavailable > listed {
                out += &format!("  - and {} more...\n", unavailable - listed);
            }
        }
    }
    out
}

fn state(s: i32) -> &'static str {
    match NodeState::try_from(s) {
        Ok(NodeState::NodeConnected) => "Connected",
        Ok(NodeState::NodeUnavailable) => "Unavailable",
        Ok(NodeState::NodeGone) => "Gone",
        Ok(NodeState::NodeError) => "Error",
        _ => "Unknown",
    }
}

/// `hubble list nodes` (`-o table`, or `-o wide`), nodes sorted by name.
pub fn nodes_table(nodes: &[Node], wide: bool) -> String {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = vec!["NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"];
    if wide {
        header.extend(["VERSION", "ADDRESS", "TLS"]);
    }
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for n in nodes {
        // Rounded to the second as the CLI rounds (half away from zero).
        let secs = (n.uptime_ns + 500_000_000) / 1_000_000_000;
        let (age, rate) = if secs > 0 {
            (
                go_duration(secs),
                format!("{:.2}", n.seen_flows as f64 / secs as f64),
            )
        } else {
            (NOT_AVAILABLE.to_owned(), NOT_AVAILABLE.to_owned())
        };
        let ratio = if n.max_flows > 0 {
            format!(
                "{}/{} ({:6.2}%)",
                n.num_flows,
                n.max_flows,
                n.num_flows as f64 / n.max_flows as f64 * 100.0
            )
        } else {
            NOT_AVAILABLE.to_owned()
        };
        let mut row = vec![n.name.clone(), state(n.state).to_owned(), age, rate, ratio];
        if wide {
            let version = if n.version.is_empty() {
                NOT_AVAILABLE.to_owned()
            } else {
                n.version.clone()
            };
            let tls = match &n.tls {
                Some(t) if t.enabled => "Enabled",
                Some(_) => "Disabled",
                None => NOT_AVAILABLE,
            };
            row.extend([version, n.address.clone(), tls.to_owned()]);
        }
        rows.push(row);
    }
    tabulate(&rows)
}

/// Go's tabwriter as the hubble CLI sets it up (padding 3, spaces): every column but the last
/// as wide as its widest cell plus three.
fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                out += cell;
            } else {
                out += &format!("{cell:<w$}", w = widths[c] + 3);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_hubble_proto::observer::Tls;

    #[test]
    fn like_hubble_list_nodes() {
        let node = |name: &str, state: NodeState, up: u64| Node {
            name: name.into(),
            version: "1.19.4".into(),
            address: "127.0.0.2:4244".into(),
            state: state as i32,
            tls: Some(Tls {
                enabled: true,
                server_name: "x".into(),
            }),
            uptime_ns: up,
            num_flows: 9,
            max_flows: 4095,
            seen_flows: 18,
        };
        let nodes = [
            node("node-b", NodeState::NodeUnavailable, 0),
            node("node-a", NodeState::NodeConnected, 3_723_400_000_000),
        ];
        assert_eq!(
            nodes_table(&nodes, false),
            "NAME     STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS\n\
             node-a   Connected     1h2m3s   0.00      9/4095 (  0.22%)\n\
             node-b   Unavailable   N/A      N/A       9/4095 (  0.22%)\n"
        );
        assert!(
            nodes_table(&nodes, true)
                .lines()
                .nth(1)
                .unwrap()
                .ends_with("1.19.4    127.0.0.2:4244   Enabled")
        );
        assert_eq!(go_duration(120), "2m0s");
        assert_eq!(grouped(1_234_567), "1,234,567");
        let status = ServerStatusResponse {
            num_flows: 12_285,
            max_flows: 12_285,
            seen_flows: 30,
            uptime_ns: 10_000_000_000,
            num_connected_nodes: Some(2u32.into()),
            num_unavailable_nodes: Some(1u32.into()),
            unavailable_nodes: vec!["node-c".into()],
            ..Default::default()
        };
        assert_eq!(
            server_status(&status),
            "Current/Max Flows: 12,285/12,285 (100.00%)\nFlows/s: 3.00\nConnected Nodes: 2/3\nUnavailable Nodes: 1\n  - node-c\n"
        );
    }
}
