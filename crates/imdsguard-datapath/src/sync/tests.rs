//! `TableSync` against the in-memory tables: the diff logic and the table protocol, without root.

use super::fake::{FakeMaps, Write};
use super::{SyncOptions, SyncStats, TableSync};
use crate::abi::{
    AUDIT_VIEW_GENERATION, EP_AUDIT_EGRESS_ENFORCED, EP_AUDIT_VIEW, EP_READY, IPC_PROTECTED,
    POL_DENY,
};
use imdsguard_manifest::Source;
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use ipnet::IpNet;
use std::net::IpAddr;

/// A policy for the pods labelled `app: <app>`, its spec's sections given as YAML lines.
fn policy(app: &str, sections: &str) -> String {
    format!(
        "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
         metadata: {{name: {app}, namespace: default}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n{sections}"
    )
}

/// a may not reach the metadata address.
const A_DENY: &str = "  egressDeny: [{toCIDR: [169.254.169.254/32]}]\n";
/// b may reach one server on one port.
const B_ALLOW: &str =
    "  egress: [{toCIDR: [192.0.2.10/32], toPorts: [{ports: [{port: '8080', protocol: TCP}]}]}]\n";

/// a's and b's policies.
fn policies() -> String {
    policy("a", A_DENY) + &policy("b", B_ALLOW)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a test address")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a test prefix")
}

fn load(repo: &mut Repository, policies: &str) {
    let decoded = decode_source(
        &Source::new("policies.yaml", policies),
        &DecodeOptions::default(),
    );
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    repo.load(&decoded);
}

fn add(repo: &mut Repository, name: &str, ips: &[&str]) {
    repo.upsert_endpoint(EndpointSpec {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        labels: vec![("app".to_owned(), name.to_owned())],
        ips: ips.iter().map(|s| ip(s)).collect(),
        ..Default::default()
    });
}

/// a (10.0.0.2, fd00::2) and b (10.0.0.3), with their policies, not resolved yet.
fn unresolved() -> Repository {
    let mut repo = Repository::new(EngineOptions::default());
    load(&mut repo, &policies());
    add(&mut repo, "a", &["10.0.0.2", "fd00::2"]);
    add(&mut repo, "b", &["10.0.0.3"]);
    repo
}

fn repository() -> Repository {
    let mut repo = unresolved();
    repo.resolve();
    repo
}

/// One agent's table sync and the tables it writes.
struct Agent {
    ts: TableSync,
    maps: FakeMaps,
}

impl Agent {
    /// An agent starting on `maps`.
    fn on(maps: FakeMaps) -> Agent {
        Agent {
            ts: TableSync::new(SyncOptions::default()),
            maps,
        }
    }

    /// An agent on empty tables, synced once with `repo`.
    fn synced(repo: &Repository) -> Agent {
        let mut agent = Agent::on(FakeMaps::new());
        agent.sync(repo);
        agent
    }

    /// The next agent, after this one went: the same pinned tables.
    fn restart(&self) -> Agent {
        Agent::on(self.maps.restarted())
    }

    fn sync(&mut self, repo: &Repository) -> SyncStats {
        self.ts
            .sync(repo, &mut self.maps)
            .expect("the fake never fails")
    }

    /// The endpoint ID of `default/<name>`.
    fn id(&self, name: &str) -> u32 {
        let key = format!("default/{name}");
        self.ts
            .endpoint_id(&key)
            .unwrap_or_else(|| panic!("{key} has no ID"))
    }

    fn generation(&self, addr: &str) -> u32 {
        self.maps.endpoints[&ip(addr)].generation
    }
}

#[test]
fn a_policy_change_writes_the_new_generation_before_the_flip_and_leaves_no_stale_rows() {
    let mut repo = repository();
    let mut agent = Agent::synced(&repo);
    let a = agent.id("a");
    let old = agent.generation("10.0.0.2");
    let old_rows = agent.maps.policy_rows(a);
    assert!(!old_rows.is_empty());
    assert!(old_rows.iter().all(|(_, k, _)| k.generation == old));
    agent.maps.take_writes();

    // a's policy changes: it now also allows one server.
    let allow = "  egress: [{toCIDR: [192.0.2.20/32], toPorts: [{ports: [{port: '443'}]}]}]\n";
    load(&mut repo, &policy("a", &format!("{A_DENY}{allow}")));
    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(stats.policies_applied, 1, "{stats:?}");
    let new = agent.generation("10.0.0.2");
    assert!(new > old, "{new} after {old}");
    assert_eq!(agent.generation("fd00::2"), new);
    let rows = agent.maps.policy_rows(a);
    assert!(rows.len() > old_rows.len(), "the allow adds rows");
    assert!(rows.iter().all(|(_, k, _)| k.generation == new), "{rows:?}");

    // Every new row is in before the first address flips; the old rows go after the last.
    let writes = agent.maps.take_writes();
    let position = |want: &dyn Fn(&Write) -> bool| writes.iter().position(want);
    let last_row = writes
        .iter()
        .rposition(|w| matches!(w, Write::PutPolicy(_, k, _) if k.generation == new))
        .expect("new rows");
    let flips: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| matches!(w, Write::PutEndpoint(_, e) if e.generation == new))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flips.len(), 2, "one flip per address: {writes:?}");
    let first_delete = position(&|w| matches!(w, Write::DeletePolicy(..))).expect("deletes");
    assert!(last_row < flips[0], "{writes:?}");
    assert!(flips[1] < first_delete, "{writes:?}");
    for (len, key, _) in &old_rows {
        assert!(writes.contains(&Write::DeletePolicy(*len, *key)), "{key:?}");
    }
    // b did not change: nothing of it was written.
    let b = agent.id("b");
    assert!(!writes.iter().any(|w| matches!(w,
        Write::PutPolicy(_, k, _) | Write::DeletePolicy(_, k) if k.ep_id == b)));
}

#[test]
fn a_mapped_metadata_prefix_keeps_the_identity_of_its_ipv4_form() {
    // a's policy names 169.254.169.254/32: its CIDR identity must reach the datapath, although
    // the protected set also holds ::ffff:169.254.169.254/128, the same key in the maps.
    let repo = repository();
    let cidr = repo.identity_of_ip(ip("169.254.169.254"));
    assert!(cidr.0 >= 1 << 24, "a CIDR identity: {cidr:?}");
    let mut agent = Agent::on(FakeMaps::new());
    agent.sync(&repo);
    let entry = agent.maps.ipcache[&net("169.254.169.254/32")];
    assert_eq!(entry.identity, cidr.0);
    assert_ne!(entry.flags & IPC_PROTECTED, 0);
    // Whatever order the writes come in, none may use a key the map would fold onto another.
    let folded: Vec<IpNet> = agent
        .maps
        .take_writes()
        .into_iter()
        .filter_map(|w| match w {
            Write::SetIpcache(n, _) if crate::abi::canonical_prefix(&n) != n => Some(n),
            _ => None,
        })
        .collect();
    assert!(folded.is_empty(), "{folded:?}");
}

#[test]
fn removing_an_endpoint_removes_its_addresses_rows_and_ipcache_entries() {
    let mut repo = repository();
    let mut agent = Agent::synced(&repo);
    let (a, b) = (agent.id("a"), agent.id("b"));
    assert!(!agent.maps.policy_rows(b).is_empty());
    assert!(agent.maps.ipcache.contains_key(&net("10.0.0.3/32")));
    let a_rows = agent.maps.policy_rows(a).len();

    repo.remove_endpoint("default", "b");
    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(stats.endpoints_removed, 1, "{stats:?}");
    assert_eq!(stats.ipcache_removed, 1, "{stats:?}");
    assert_eq!(agent.ts.endpoint_id("default/b"), None);
    let maps = &agent.maps;
    assert!(!maps.endpoints.contains_key(&ip("10.0.0.3")));
    assert!(maps.policy_rows(b).is_empty());
    assert!(!maps.ipcache.contains_key(&net("10.0.0.3/32")));
    // a keeps everything.
    assert_eq!(maps.endpoints[&ip("10.0.0.2")].ep_id, a);
    assert_eq!(maps.policy_rows(a).len(), a_rows);
    assert!(maps.ipcache.contains_key(&net("10.0.0.2/32")));
}

#[test]
fn an_endpoint_without_policy_is_pending_with_metadata_protected_until_its_policy_lands() {
    let mut repo = repository();
    // c is known but not resolved yet: the engine has no policy for it.
    add(&mut repo, "c", &["10.0.0.4"]);
    let mut agent = Agent::on(FakeMaps::new());
    let stats = agent.sync(&repo);
    assert_eq!(stats.endpoints_pending, 1, "{stats:?}");
    let c = agent.id("c");
    let maps = &agent.maps;
    let pending = maps.endpoints[&ip("10.0.0.4")];
    assert_eq!(
        (pending.ep_id, pending.generation, pending.flags),
        (c, 0, 0)
    );
    assert!(maps.policy_rows(c).is_empty());
    // The metadata addresses are marked protected: the datapath drops a pending endpoint's
    // packets to them.
    let protected = imdsguard_metadata::protected_prefixes();
    assert!(protected.len() >= 14, "{protected:?}");
    for p in protected {
        let entry = maps.ipcache[&crate::abi::canonical_prefix(&p)];
        assert_ne!(entry.flags & IPC_PROTECTED, 0, "{p}");
    }
    assert_eq!(maps.ipcache[&net("10.0.0.4/32")].flags & IPC_PROTECTED, 0);

    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(
        (stats.policies_applied, stats.endpoints_pending),
        (1, 0),
        "{stats:?}"
    );
    let ready = agent.maps.endpoints[&ip("10.0.0.4")];
    assert_eq!(ready.ep_id, c, "the ID stays");
    assert!(ready.generation > 0);
    assert_ne!(ready.flags & EP_READY, 0);
}

#[test]
fn a_restarted_sync_takes_ids_back_and_numbers_new_endpoints_above_them() {
    let first = Agent::synced(&repository());
    let (a, b) = (first.id("a"), first.id("b"));
    let highest_generation = first
        .maps
        .endpoints
        .values()
        .map(|e| e.generation)
        .max()
        .expect("endpoints");

    // A new agent: same pins, its own engine, where an endpoint that sorts first is new.
    let mut agent = first.restart();
    let mut repo = repository();
    add(&mut repo, "aaa", &["10.0.0.9"]);
    repo.resolve();
    agent.sync(&repo);
    assert_eq!((agent.id("a"), agent.id("b")), (a, b));
    let new = agent.id("aaa");
    let maps = &agent.maps;
    assert!(new > a.max(b), "{new} is not above {a} and {b}");
    // Every generation written now is above the pinned ones, and the earlier agent's rows are
    // gone.
    for e in maps.endpoints.values() {
        assert!(e.generation > highest_generation, "{e:?}");
    }
    for key in maps.policy.keys().map(|(_, k)| k) {
        assert_eq!(
            Some(key.generation),
            maps.endpoints
                .values()
                .find(|e| e.ep_id == key.ep_id)
                .map(|e| e.generation),
            "{key:?}"
        );
    }
}

#[test]
fn after_a_restart_a_pending_endpoint_keeps_the_earlier_policy_until_its_own_replaces_it() {
    let first = Agent::synced(&repository());
    let a = first.id("a");
    let earlier = first.generation("10.0.0.2");

    // The new agent knows a before its engine resolved it.
    let mut agent = first.restart();
    let mut repo = unresolved();
    let stats = agent.sync(&repo);
    assert_eq!(stats.endpoints_pending, 2, "{stats:?}");
    assert_eq!(agent.id("a"), a);
    // Not closed again: the earlier agent's policy stays in force, rows and all.
    assert_eq!(agent.generation("10.0.0.2"), earlier);
    assert!(!agent.maps.policy_rows(a).is_empty());

    repo.resolve();
    agent.sync(&repo);
    let own = agent.generation("10.0.0.2");
    assert!(own > earlier);
    let rows = agent.maps.policy_rows(a);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|(_, k, _)| k.generation == own), "{rows:?}");
}

#[test]
fn the_first_sync_removes_what_an_earlier_agent_left_and_nobody_wants() {
    // An agent knew a pod that went while no agent ran, and a prefix no policy names any more.
    let mut gone = repository();
    add(&mut gone, "gone", &["10.0.0.7"]);
    load(
        &mut gone,
        &policy("gone", "  egress: [{toCIDR: [198.51.100.0/24]}]\n"),
    );
    gone.resolve();
    let before = Agent::synced(&gone);
    let gone_id = before.id("gone");
    assert!(before.maps.ipcache.contains_key(&net("198.51.100.0/24")));

    let mut agent = before.restart();
    let stats = agent.sync(&repository());
    let maps = &agent.maps;
    assert!(!maps.endpoints.contains_key(&ip("10.0.0.7")));
    assert!(maps.policy_rows(gone_id).is_empty());
    assert!(!maps.ipcache.contains_key(&net("198.51.100.0/24")));
    assert!(!maps.ipcache.contains_key(&net("10.0.0.7/32")));
    assert_eq!(stats.ipcache_removed, 2, "{stats:?}");
}

#[test]
fn a_second_sync_without_change_writes_nothing() {
    let mut repo = repository();
    let mut agent = Agent::on(FakeMaps::new());
    let first = agent.sync(&repo);
    assert_eq!(first.policies_applied, 2, "{first:?}");
    assert!(agent.maps.take_writes().contains(&Write::BumpPolicyEpoch));

    let stats = agent.sync(&repo);
    assert_eq!(stats, SyncStats::default());
    assert_eq!(agent.maps.take_writes(), []);

    // A new endpoint: only its own entries are written, and the epoch is bumped once.
    add(&mut repo, "c", &["10.0.0.4"]);
    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(
        (stats.ipcache_written, stats.policies_applied),
        (1, 1),
        "{stats:?}"
    );
    let c = agent.id("c");
    let writes = agent.maps.take_writes();
    assert!(writes.iter().all(|w| match w {
        Write::SetIpcache(n, _) => *n == net("10.0.0.4/32"),
        Write::PutEndpoint(ip, e) => *ip == self::ip("10.0.0.4") && e.ep_id == c,
        Write::PutPolicy(_, k, _) => k.ep_id == c,
        Write::BumpPolicyEpoch => true,
        _ => false,
    }));
    assert_eq!(
        writes
            .iter()
            .filter(|w| **w == Write::BumpPolicyEpoch)
            .count(),
        1
    );
}

/// An audit-mode policy for the pods labelled `app: <app>`.
fn audit_policy(name: &str, app: &str, sections: &str) -> String {
    format!(
        "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
         metadata: {{name: {name}, namespace: default, \
         annotations: {{policy.imdsguard.io/audit-mode: \"true\"}}}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n{sections}"
    )
}

/// a's full view: an audited deny of one server.
fn a_audit() -> String {
    audit_policy(
        "a-audit",
        "a",
        "  enableDefaultDeny: {egress: false}\n  egressDeny: [{toCIDR: [192.0.2.30/32]}]\n",
    )
}

fn audit_rows(
    agent: &Agent,
    ep_id: u32,
) -> Vec<(u32, crate::abi::PolicyKey, crate::abi::PolicyValue)> {
    agent
        .maps
        .policy_rows(ep_id)
        .into_iter()
        .filter(|(_, k, _)| k.generation & AUDIT_VIEW_GENERATION != 0)
        .collect()
}

#[test]
fn audit_rows_are_written_only_for_endpoints_an_audit_policy_selects() {
    let mut repo = repository();
    let mut agent = Agent::synced(&repo);
    let (a, b) = (agent.id("a"), agent.id("b"));
    // No audit policy: one view, no flag.
    assert!(audit_rows(&agent, a).is_empty());
    assert_eq!(
        agent.maps.endpoints[&ip("10.0.0.2")].flags & EP_AUDIT_VIEW,
        0
    );

    load(&mut repo, &a_audit());
    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(stats.policies_applied, 1, "only a changes: {stats:?}");
    let info = agent.maps.endpoints[&ip("10.0.0.2")];
    assert_eq!(info.flags & EP_AUDIT_VIEW, EP_AUDIT_VIEW);
    assert_eq!(
        info.flags & EP_AUDIT_EGRESS_ENFORCED,
        EP_AUDIT_EGRESS_ENFORCED
    );
    let rows = audit_rows(&agent, a);
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|(_, k, _)| k.generation == info.generation | AUDIT_VIEW_GENERATION),
        "{rows:?}"
    );
    // The audited deny names the audit policy; the enforced deny stays in the full view too.
    let names: Vec<String> = rows
        .iter()
        .filter(|(_, _, v)| v.flags & POL_DENY != 0)
        .filter_map(|(_, _, v)| {
            agent
                .ts
                .rule_ids
                .policy(v.rule_id)
                .map(|p| p.name.to_string())
        })
        .collect();
    assert!(names.contains(&"a-audit".to_owned()), "{names:?}");
    assert!(names.contains(&"a".to_owned()), "{names:?}");
    // The enforced view holds no row of the audit policy.
    let enforced_names: Vec<String> = agent
        .maps
        .policy_rows(a)
        .into_iter()
        .filter(|(_, k, _)| k.generation & AUDIT_VIEW_GENERATION == 0)
        .filter_map(|(_, _, v)| {
            agent
                .ts
                .rule_ids
                .policy(v.rule_id)
                .map(|p| p.name.to_string())
        })
        .collect();
    assert!(!enforced_names.contains(&"a-audit".to_owned()));
    // b is not selected: still one view.
    assert!(audit_rows(&agent, b).is_empty());
    assert_eq!(
        agent.maps.endpoints[&ip("10.0.0.3")].flags & EP_AUDIT_VIEW,
        0
    );
}

#[test]
fn audit_rows_go_with_the_audit_policy_and_with_the_endpoint() {
    let mut repo = unresolved();
    load(&mut repo, &a_audit());
    repo.resolve();
    let mut agent = Agent::synced(&repo);
    let a = agent.id("a");
    assert!(!audit_rows(&agent, a).is_empty());

    // The audit policy goes: the next generation has one view, and the full view's rows are gone.
    let audit_ref = repo
        .policies()
        .find(|p| &*p.id.name == "a-audit")
        .map(|p| p.id.clone())
        .expect("the audit policy");
    assert!(repo.delete_policy(&audit_ref));
    repo.resolve();
    agent.sync(&repo);
    assert!(
        audit_rows(&agent, a).is_empty(),
        "{:?}",
        audit_rows(&agent, a)
    );
    assert_eq!(
        agent.maps.endpoints[&ip("10.0.0.2")].flags & EP_AUDIT_VIEW,
        0
    );
    assert!(!agent.maps.policy_rows(a).is_empty());

    // Back, then the endpoint goes: both views' rows go with it.
    load(&mut repo, &a_audit());
    repo.resolve();
    agent.sync(&repo);
    assert!(!audit_rows(&agent, a).is_empty());
    repo.remove_endpoint("default", "a");
    repo.resolve();
    agent.sync(&repo);
    assert!(agent.maps.policy_rows(a).is_empty());
}

#[test]
fn one_generation_flip_switches_both_views_and_a_restart_keeps_them() {
    let mut repo = unresolved();
    load(&mut repo, &a_audit());
    repo.resolve();
    let mut agent = Agent::synced(&repo);
    let a = agent.id("a");
    let old = agent.generation("10.0.0.2");
    let old_rows = agent.maps.policy_rows(a);
    agent.maps.take_writes();

    // The audit policy changes: both views of a are rewritten under one new generation.
    load(
        &mut repo,
        &audit_policy(
            "a-audit",
            "a",
            "  enableDefaultDeny: {egress: false}\n  egressDeny: [{toCIDR: [192.0.2.31/32]}]\n",
        ),
    );
    repo.resolve();
    agent.sync(&repo);
    let new = agent.generation("10.0.0.2");
    assert!(new > old && new & AUDIT_VIEW_GENERATION == 0);
    let rows = agent.maps.policy_rows(a);
    assert!(
        rows.iter()
            .all(|(_, k, _)| k.generation & !AUDIT_VIEW_GENERATION == new),
        "{rows:?}"
    );
    let writes = agent.maps.take_writes();
    let last_audit_row = writes
        .iter()
        .rposition(|w| matches!(w, Write::PutPolicy(_, k, _) if k.generation == new | AUDIT_VIEW_GENERATION))
        .expect("new audit rows");
    let first_flip = writes
        .iter()
        .position(|w| matches!(w, Write::PutEndpoint(_, e) if e.generation == new))
        .expect("a flip");
    let first_delete = writes
        .iter()
        .position(|w| matches!(w, Write::DeletePolicy(..)))
        .expect("deletes");
    assert!(
        last_audit_row < first_flip && first_flip < first_delete,
        "{writes:?}"
    );
    for (len, key, _) in &old_rows {
        assert!(writes.contains(&Write::DeletePolicy(*len, *key)), "{key:?}");
    }

    // A restarted agent keeps the live generation's rows of both views, and starts its
    // generations above the highest (without the audit bit).
    let before = agent.maps.policy_rows(a).len();
    let mut next = agent.restart();
    next.sync(&repo);
    assert_eq!(next.maps.policy_rows(a).len(), before);
    assert!(!audit_rows(&next, a).is_empty());
}

/// h: a hostNetwork pod (no addresses of its own), denied the metadata address as a is.
fn with_host_network_pod() -> Repository {
    let mut repo = Repository::new(EngineOptions::default());
    load(&mut repo, &(policies() + &policy("h", A_DENY)));
    add(&mut repo, "a", &["10.0.0.2", "fd00::2"]);
    add(&mut repo, "b", &["10.0.0.3"]);
    add(&mut repo, "h", &[]);
    repo.resolve();
    repo
}

fn cgroups(entries: &[(u64, &str)]) -> std::collections::HashMap<u64, String> {
    entries
        .iter()
        .map(|(c, n)| (*c, format!("default/{n}")))
        .collect()
}

#[test]
fn a_host_network_pods_cgroups_get_its_entry_without_any_address() {
    use crate::abi::EP_HOST_NETWORK;
    let repo = with_host_network_pod();
    let mut agent = Agent::on(FakeMaps::new());
    agent
        .ts
        .set_cgroup_endpoints(cgroups(&[(120, "h"), (121, "h"), (7, "nobody")]));
    agent.sync(&repo);
    let h = agent.id("h");
    let entry = agent.maps.cgroup_endpoints[&120];
    assert_eq!(entry.ep_id, h);
    assert_eq!(
        entry.flags & (EP_HOST_NETWORK | EP_READY),
        EP_HOST_NETWORK | EP_READY
    );
    assert_eq!(agent.maps.cgroup_endpoints[&121], entry);
    // Its rows are written under the generation the entry names; a key that is no endpoint
    // gets nothing.
    assert!(!agent.maps.policy_rows(h).is_empty());
    assert!(
        agent
            .maps
            .policy_rows(h)
            .iter()
            .all(|(_, k, _)| k.generation == entry.generation)
    );
    assert!(!agent.maps.cgroup_endpoints.contains_key(&7));
    // Pods with addresses have no cgroup entries, and h no address entry.
    assert_eq!(agent.maps.cgroup_endpoints.len(), 2);
    assert!(agent.maps.endpoints.values().all(|e| e.ep_id != h));
}

#[test]
fn a_generation_bump_flips_the_cgroup_entries_before_the_old_rows_go() {
    let mut repo = with_host_network_pod();
    let mut agent = Agent::on(FakeMaps::new());
    agent.ts.set_cgroup_endpoints(cgroups(&[(120, "h")]));
    agent.sync(&repo);
    let h = agent.id("h");
    let old = agent.maps.cgroup_endpoints[&120].generation;
    agent.maps.take_writes();
    let allow = "  egress: [{toCIDR: [192.0.2.20/32]}]\n";
    load(&mut repo, &policy("h", &format!("{A_DENY}{allow}")));
    repo.resolve();
    let stats = agent.sync(&repo);
    assert_eq!(stats.policies_applied, 1, "{stats:?}");
    let new = agent.maps.cgroup_endpoints[&120].generation;
    assert!(new > old);
    let writes = agent.maps.take_writes();
    let flip = writes
        .iter()
        .position(|w| matches!(w, Write::SetCgroupEndpoint(120, e) if e.generation == new))
        .expect("the cgroup entry flips");
    let last_row = writes
        .iter()
        .rposition(|w| matches!(w, Write::PutPolicy(_, k, _) if k.generation == new))
        .expect("new rows");
    let first_delete = writes
        .iter()
        .position(|w| matches!(w, Write::DeletePolicy(..)))
        .expect("old rows go");
    assert!(last_row < flip && flip < first_delete, "{writes:?}");
    assert!(
        agent
            .maps
            .policy_rows(h)
            .iter()
            .all(|(_, k, _)| k.generation == new)
    );
}

#[test]
fn cgroups_come_and_go_without_a_new_generation_and_leave_with_their_pod() {
    let mut repo = with_host_network_pod();
    let mut agent = Agent::on(FakeMaps::new());
    agent.ts.set_cgroup_endpoints(cgroups(&[(120, "h")]));
    agent.sync(&repo);
    let entry = agent.maps.cgroup_endpoints[&120];
    agent.maps.take_writes();

    // A container restarts: a new cgroup, the old one gone.
    agent.ts.set_cgroup_endpoints(cgroups(&[(130, "h")]));
    let stats = agent.sync(&repo);
    assert_eq!(stats.cgroups_changed, 1, "{stats:?}");
    assert_eq!(stats.policies_applied, 0);
    assert_eq!(
        agent
            .maps
            .cgroup_endpoints
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [130]
    );
    assert_eq!(agent.maps.cgroup_endpoints[&130], entry);
    assert!(
        !agent
            .maps
            .take_writes()
            .iter()
            .any(|w| matches!(w, Write::PutPolicy(..)))
    );
    // Nothing changed: nothing written.
    agent.sync(&repo);
    assert!(agent.maps.take_writes().is_empty());

    // The pod goes: its cgroup entry and its rows go.
    let h = agent.id("h");
    repo.remove_endpoint("default", "h");
    repo.resolve();
    agent.sync(&repo);
    assert!(agent.maps.cgroup_endpoints.is_empty());
    assert!(agent.maps.policy_rows(h).is_empty());
}

#[test]
fn a_restart_keeps_a_host_network_pods_id_and_drops_cgroups_nobody_wants() {
    let repo = with_host_network_pod();
    let mut agent = Agent::on(FakeMaps::new());
    agent
        .ts
        .set_cgroup_endpoints(cgroups(&[(120, "h"), (140, "h")]));
    agent.sync(&repo);
    let (h, entry) = (agent.id("h"), agent.maps.cgroup_endpoints[&120]);

    let mut next = agent.restart();
    next.ts.set_cgroup_endpoints(cgroups(&[(120, "h")]));
    next.sync(&repo);
    assert_eq!(next.id("h"), h, "the pinned cgroup entry gives the ID back");
    let kept = next.maps.cgroup_endpoints[&120];
    assert_eq!((kept.ep_id, kept.flags), (entry.ep_id, entry.flags));
    assert!(!next.maps.cgroup_endpoints.contains_key(&140));
    // The live generation's rows survived the first sync's cleanup.
    assert!(
        next.maps
            .policy_rows(h)
            .iter()
            .any(|(_, k, _)| k.generation == kept.generation)
    );
}
