//! The policy routing the datapath's proxy redirect needs: packets assigned to the proxy's socket
//! with `bpf_sk_assign` keep their non-local destination, so the mark the datapath sets selects
//! a table where every address is local (as Cilium's `ip rule fwmark 0x200/0xf00 lookup 2004`).

use std::io;
use std::process::Command;

/// The mark the datapath sets on packets it assigns to the proxy (`Options::proxy_mark` in
/// imdsguard-datapath), and the routing table that mark selects (Cilium's 0x200 and 2004).
pub const MARK: u32 = 0x200;
pub const TABLE: u32 = 2004;

fn ip(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "running ip {}: {e} (is iproute2 installed?)",
                args.join(" ")
            ),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds `fwmark <mark>/0xf00 lookup <table>` and a `local default dev lo` route in that table,
/// for IPv4 and (when the kernel has it) IPv6. Idempotent: rules already there stay single.
pub fn install(mark: u32, table: u32) -> io::Result<()> {
    let selector = format!("fwmark {mark:#x}/0xf00 lookup {table}");
    for family in ["-4", "-6"] {
        let rules = match ip(&[family, "rule", "show"]) {
            Ok(r) => r,
            // No IPv6 on this kernel: nothing to route.
            Err(_) if family == "-6" => continue,
            Err(e) => return Err(e),
        };
        if !rules.lines().any(|l| l.contains(&selector)) {
            ip(&[
                family,
                "rule",
                "add",
                "fwmark",
                &format!("{mark:#x}/0xf00"),
                "lookup",
                &table.to_string(),
            ])?;
        }
        let default = if family == "-4" { "0.0.0.0/0" } else { "::/0" };
        ip(&[
            family,
            "route",
            "replace",
            "local",
            default,
            "dev",
            "lo",
            "table",
            &table.to_string(),
        ])?;
    }
    Ok(())
}

/// Whether a rule into `table` exists (so a test or the demo knows whether it added it).
pub fn installed(table: u32) -> bool {
    ip(&["rule", "show"]).is_ok_and(|r| r.contains(&format!("lookup {table}")))
}

/// Removes what `install` added.
pub fn uninstall(mark: u32, table: u32) {
    for family in ["-4", "-6"] {
        let _ = ip(&[
            family,
            "rule",
            "del",
            "fwmark",
            &format!("{mark:#x}/0xf00"),
            "lookup",
            &table.to_string(),
        ]);
        let _ = ip(&[family, "route", "flush", "table", &table.to_string()]);
    }
}
