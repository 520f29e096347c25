//! The proxy's policy routing against the kernel. Each test runs on a thread of its own that
//! first moves into a new network namespace (`unshare(CLONE_NEWNET)`), so the machine's own
//! rules are never touched; without root they skip, saying why. Other components' rules are
//! added with iproute2, which also checks what `routing` did through a second implementation.

#![cfg(target_os = "linux")]

use imdsguard_proxy::routing::{self, Family, MARK, PREF, TABLE};
use std::net::IpAddr;
use std::process::Command;

/// Says that the calling test is skipped and why (imdsguard_netns::skip_test).
fn skip(reason: &str) {
    imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), reason);
}

/// Runs `f` on a thread in a network namespace of its own, with lo up.
fn in_netns(f: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("creating a network namespace needs root");
        return;
    }
    // Named after the test, like the test's own thread, for skip().
    let name = std::thread::current().name().map(str::to_owned);
    let mut thread = std::thread::Builder::new();
    if let Some(name) = name {
        thread = thread.name(name);
    }
    let outcome = thread
        .spawn(move || {
            let before = std::fs::read_link("/proc/thread-self/ns/net")?;
            // SAFETY: unshare changes only this thread's namespace, and this thread is ours.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ours = std::fs::read_link("/proc/thread-self/ns/net")?;
            assert_ne!(before, ours, "unshare left the thread where it was");
            // `ip` must run where this thread is, or it would change the machine's rules.
            let child = run(
                "readlink",
                &["/proc/self/ns/net"],
                "reading a child's namespace",
            );
            assert_eq!(
                child.trim(),
                ours.to_string_lossy(),
                "a child does not inherit the thread's namespace"
            );
            ip(&["link", "set", "lo", "up"]);
            f();
            Ok(())
        })
        .expect("spawn the test's thread")
        .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => skip(&format!("cannot create a network namespace: {e}")),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run(program: &str, args: &[&str], what: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: running {program}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("ip", args, "iproute2 (scripts/prereqs.sh installs it)")
}

/// `ip rule show` for a family ("-4" or "-6"), one rule a line, tabs as spaces.
fn ip_rules(family: &str) -> Vec<String> {
    ip(&[family, "rule", "show"])
        .lines()
        .map(|l| l.replace('\t', " ").trim_end().to_owned())
        .collect()
}

/// The priorities of rules with our selector, as iproute2 sees them.
fn our_priorities(family: &str) -> Vec<u32> {
    let selector = format!("from all fwmark {MARK:#x}/0xf00 lookup {TABLE}");
    ip_rules(family)
        .iter()
        .filter(|l| l.ends_with(&selector))
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect()
}

fn has_ipv6() -> bool {
    routing::status(MARK, TABLE)
        .expect("status")
        .family(Family::V6)
        .is_some()
}

fn families() -> Vec<&'static str> {
    if has_ipv6() {
        vec!["-4", "-6"]
    } else {
        eprintln!("no IPv6 in this kernel: IPv4 only");
        vec!["-4"]
    }
}

fn shadow_rules() -> Vec<(Family, String)> {
    routing::shadowing(MARK, TABLE)
        .expect("shadowing")
        .into_iter()
        .map(|s| (s.family, s.rule))
        .collect()
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn a_fresh_install_lands_at_pref_9() {
    in_netns(|| {
        let families = families();
        let before = routing::status(MARK, TABLE).expect("status");
        assert!(!before.intact());
        for f in &before.families {
            assert_eq!(f.rule, None, "{f}");
            assert!(!f.route, "{f}");
        }
        assert!(
            before
                .problems()
                .iter()
                .any(|p| p == "IPv4: the proxy's rule is missing"),
            "{:?}",
            before.problems()
        );
        assert!(!routing::installed(TABLE));

        routing::install(MARK, TABLE).expect("install");
        for f in &families {
            assert_eq!(our_priorities(f), [PREF], "{f}: {:?}", ip_rules(f));
            let routes = ip(&[f, "route", "show", "table", &TABLE.to_string()]);
            assert!(routes.contains("local default dev lo"), "{f}: {routes}");
        }
        let after = routing::status(MARK, TABLE).expect("status");
        assert!(after.intact(), "{after}");
        assert_eq!(after.families.len(), families.len());
        for f in &after.families {
            assert_eq!(f.rule, Some(PREF));
            assert!(f.route);
        }
        // The kernel's own `0: from all lookup local` is ahead of ours and harmless.
        assert_eq!(ip_rules("-4")[0], "0: from all lookup local");
        assert_eq!(shadow_rules(), []);
        assert!(routing::installed(TABLE));
        assert!(after.reaches_proxy(addr("10.1.2.3")));

        routing::install(MARK, TABLE).expect("install again");
        for f in &families {
            assert_eq!(our_priorities(f), [PREF], "{f}: idempotent");
        }
    });
}

#[test]
fn a_stale_rule_is_moved_to_pref_9() {
    in_netns(|| {
        let families = families();
        for f in &families {
            ip(&[
                f,
                "rule",
                "add",
                "pref",
                "32765",
                "fwmark",
                "0x200/0xf00",
                "lookup",
                "2004",
            ]);
            // Someone else's rule with more selectors than ours stays as it is.
            let from = if *f == "-4" { "10.0.0.0/8" } else { "fd00::/8" };
            ip(&[
                f,
                "rule",
                "add",
                "pref",
                "32000",
                "from",
                from,
                "fwmark",
                "0x200/0xf00",
                "lookup",
                "2004",
            ]);
        }
        let stale = routing::status(MARK, TABLE).expect("status");
        for f in &stale.families {
            assert_eq!(f.rule, Some(32765), "{f}");
        }

        routing::install(MARK, TABLE).expect("install");
        for f in &families {
            assert_eq!(our_priorities(f), [PREF], "{f}: {:?}", ip_rules(f));
            assert!(
                ip_rules(f)
                    .iter()
                    .any(|l| l.starts_with("32000: from ") && l.ends_with("lookup 2004")),
                "{f}: {:?}",
                ip_rules(f)
            );
        }
        assert!(routing::status(MARK, TABLE).expect("status").intact());
    });
}

#[test]
fn rules_ahead_that_can_catch_redirected_packets_are_reported() {
    in_netns(|| {
        routing::install(MARK, TABLE).expect("install");
        for rule in [
            "pref 4 fwmark 0x200/0xf00 lookup 100",
            "pref 5 from all lookup 100",
            "pref 6 to 169.254.169.254 lookup 100",
            "pref 7 to 10.0.0.0/8 blackhole",
            "pref 8 not iif lo lookup 100",
            "pref 8 goto 100",
        ] {
            let mut args = vec!["-4", "rule", "add"];
            args.extend(rule.split(' '));
            ip(&args);
        }
        let shadows = shadow_rules();
        let expected = [
            "4: from all fwmark 0x200/0xf00 lookup 100",
            "5: from all lookup 100",
            "6: from all to 169.254.169.254 lookup 100",
            "7: from all to 10.0.0.0/8 blackhole",
            "8: not from all iif lo lookup 100",
            "8: from all goto 100 [unresolved]",
        ];
        assert_eq!(
            shadows,
            expected.map(|r| (Family::V4, r.to_owned())),
            "{:?}",
            ip_rules("-4")
        );
        // Each is described as iproute2 prints it.
        let listed = ip_rules("-4");
        for (_, rule) in &shadows {
            assert!(listed.contains(rule), "{rule} not in {listed:?}");
        }
        let status = routing::status(MARK, TABLE).expect("status");
        assert!(!status.intact());
        assert!(!status.reaches_proxy(addr("10.1.2.3")));
        assert_eq!(status.family(Family::V4).expect("IPv4").rule, Some(PREF));
        assert!(
            status
                .problems()
                .contains(&"IPv4: shadowed by rule 5: from all lookup 100".to_owned()),
            "{:?}",
            status.problems()
        );
    });
}

#[test]
fn rules_that_cannot_catch_redirected_packets_are_not_reported() {
    in_netns(|| {
        routing::install(MARK, TABLE).expect("install");
        for rule in [
            // Another mark under the datapath's bits.
            "pref 5 fwmark 0x100/0xf00 lookup 100",
            // Everything but ours.
            "pref 5 not fwmark 0x200/0xf00 lookup 100",
            // Redirected packets come in on a pod's interface, and are TCP.
            "pref 5 iif lo lookup 100",
            "pref 5 oif lo lookup 100",
            "pref 5 ipproto udp lookup 100",
            "pref 5 uidrange 1000-2000 lookup 100",
            // Into our table: what ours does.
            "pref 5 from 10.0.0.0/8 fwmark 0x200/0xf00 lookup 2004",
            // Lands on our rule.
            "pref 6 goto 9",
            "pref 7 lookup local",
            // After ours.
            "pref 90 from all lookup 100",
            "pref 90 to 169.254.169.254 lookup 100",
        ] {
            let mut args = vec!["-4", "rule", "add"];
            args.extend(rule.split(' '));
            ip(&args);
        }
        assert_eq!(shadow_rules(), [], "{:?}", ip_rules("-4"));
        assert!(routing::status(MARK, TABLE).expect("status").intact());
    });
}

#[test]
fn a_rule_at_pref_9_added_earlier_is_ahead_of_ours() {
    in_netns(|| {
        // Before install, the report is about where install would put the rule.
        ip(&[
            "-4", "rule", "add", "pref", "9", "from", "all", "lookup", "100",
        ]);
        let before = routing::status(MARK, TABLE).expect("status");
        let v4 = before.family(Family::V4).expect("IPv4");
        assert_eq!(v4.rule, None);
        assert_eq!(v4.shadowed_by.len(), 1, "{before}");

        routing::install(MARK, TABLE).expect("install");
        assert_eq!(
            shadow_rules(),
            [(Family::V4, "9: from all lookup 100".to_owned())]
        );
    });
}

#[test]
fn a_source_selector_affects_only_its_pods() {
    in_netns(|| {
        routing::install(MARK, TABLE).expect("install");
        ip(&[
            "-4",
            "rule",
            "add",
            "pref",
            "5",
            "from",
            "10.1.0.0/16",
            "lookup",
            "100",
        ]);
        let status = routing::status(MARK, TABLE).expect("status");
        assert!(!status.intact());
        assert!(!status.reaches_proxy(addr("10.1.2.3")));
        assert!(status.reaches_proxy(addr("10.2.0.1")));
        let shadow = status.shadows().next().expect("one shadow");
        assert_eq!(shadow.rule, "5: from 10.1.0.0/16 lookup 100");
        assert_eq!(shadow.priority, 5);
        assert_eq!(
            shadow.to_string(),
            "IPv4 rule 5: from 10.1.0.0/16 lookup 100"
        );
    });
}

#[test]
fn ipv6_rules_are_checked_and_installed_on_their_own() {
    in_netns(|| {
        if !has_ipv6() {
            skip("no IPv6 in this kernel");
            return;
        }
        ip(&[
            "-6",
            "rule",
            "add",
            "pref",
            "32765",
            "fwmark",
            "0x200/0xf00",
            "lookup",
            "2004",
        ]);
        routing::install(MARK, TABLE).expect("install");
        assert_eq!(our_priorities("-6"), [PREF], "{:?}", ip_rules("-6"));
        assert_eq!(shadow_rules(), []);

        for rule in [
            "pref 5 from all lookup 100",
            "pref 5 fwmark 0x100/0xf00 lookup 100",
            "pref 6 to fd00:ec2::254 lookup 100",
            "pref 7 from fd00:1::/32 unreachable",
            "pref 90 from all lookup 100",
        ] {
            let mut args = vec!["-6", "rule", "add"];
            args.extend(rule.split(' '));
            ip(&args);
        }
        let status = routing::status(MARK, TABLE).expect("status");
        let v6 = status.family(Family::V6).expect("IPv6");
        let rules: Vec<&str> = v6.shadowed_by.iter().map(|s| s.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "5: from all lookup 100",
                "6: from all to fd00:ec2::254 lookup 100",
                "7: from fd00:1::/32 unreachable",
            ],
            "{:?}",
            ip_rules("-6")
        );
        assert!(v6.shadowed_by.iter().all(|s| s.family == Family::V6));
        let listed = ip_rules("-6");
        for rule in rules {
            assert!(listed.iter().any(|l| l == rule), "{rule} not in {listed:?}");
        }
        assert!(status.family(Family::V4).expect("IPv4").intact());
        assert!(!status.reaches_proxy(addr("fd00:2::1")));
        assert!(status.reaches_proxy(addr("10.1.2.3")));
    });
}

#[test]
fn a_removed_rule_or_route_is_reported() {
    in_netns(|| {
        routing::install(MARK, TABLE).expect("install");
        ip(&["-4", "rule", "del", "pref", "9"]);
        let status = routing::status(MARK, TABLE).expect("status");
        let v4 = status.family(Family::V4).expect("IPv4");
        assert_eq!(v4.rule, None);
        assert!(v4.route);
        assert!(!status.reaches_proxy(addr("10.1.2.3")));
        assert_eq!(
            status.to_string().split("; ").next(),
            Some("IPv4: rule missing, not shadowed")
        );

        routing::install(MARK, TABLE).expect("install");
        ip(&["-4", "route", "flush", "table", "2004"]);
        let status = routing::status(MARK, TABLE).expect("status");
        assert!(!status.family(Family::V4).expect("IPv4").route);
        assert!(
            status.problems().contains(
                &"IPv4: the proxy's table has no `local default dev lo` route".to_owned()
            )
        );
    });
}

#[test]
fn uninstall_removes_our_rules_at_any_priority_and_flushes_the_table() {
    in_netns(|| {
        let families = families();
        routing::install(MARK, TABLE).expect("install");
        for f in &families {
            ip(&[
                f,
                "rule",
                "add",
                "pref",
                "100",
                "fwmark",
                "0x200/0xf00",
                "lookup",
                "2004",
            ]);
            let dst = if *f == "-4" {
                "10.9.0.0/16"
            } else {
                "fd00:9::/32"
            };
            ip(&[f, "route", "add", dst, "dev", "lo", "table", "2004"]);
            assert_eq!(our_priorities(f), [PREF, 100]);
        }
        assert!(routing::installed(TABLE));

        routing::uninstall(MARK, TABLE);
        for f in &families {
            assert_eq!(our_priorities(f), [0u32; 0], "{f}: {:?}", ip_rules(f));
            let routes = ip(&[f, "route", "show", "table", "2004"]);
            assert_eq!(routes.trim(), "", "{f}");
        }
        assert!(!routing::installed(TABLE));
        // Nothing left to remove is not an error.
        routing::uninstall(MARK, TABLE);
    });
}
