//! Filters on the container and process of a flow (`--container`, `--process`).
//!
//! Hubble's `FlowFilter` has no field for them, so no server can apply them: the client does, on
//! the flows a server (or a recorded file) gives it. The process travels in `Flow.extensions`
//! ([`imdsguard_hubble_proto::process`]).
//!
//! They keep the semantics of Hubble's filter flags. Within one list (whitelist or blacklist)
//! repeated values are ORed and different flags ANDed, also with the list's server-side fields.
//! A whitelist is `(left OR right) AND process criteria`, so the server applies its part and the
//! client the rest. A blacklist is `NOT ((left OR right) AND process criteria)`, which a server
//! cannot apply without the process criteria: a blacklist with process criteria is applied by the
//! client as a whole, and the server gets none ([`ClientFilter`]).

use super::{FilterError, FlowFilters};
use crate::flow::{Flow, FlowFilter};
use imdsguard_hubble_proto::process::{self, ProcessInfo};

/// The kernel keeps 15 bytes of a task's name (`TASK_COMM_LEN` 16, with the NUL).
const COMM_LEN: usize = 15;

/// `--container` and `--process` values of one list: any container, and any process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFilter {
    /// Container names (exact); empty: any.
    pub container: Vec<String>,
    /// Process names, as `comm`: exact, or a name longer than the kernel keeps matching its
    /// first 15 bytes (`--process kube-controller-manager` matches `kube-controller`).
    pub process: Vec<String>,
}

impl ProcessFilter {
    pub fn is_empty(&self) -> bool {
        self.container.is_empty() && self.process.is_empty()
    }

    /// Whether the process (`None`: not known) matches every criterion that is set.
    pub fn matches(&self, p: Option<&ProcessInfo>) -> bool {
        let container = p.map_or("", |p| p.container.as_str());
        let comm = p.map_or("", |p| p.process.as_str());
        (self.container.is_empty() || self.container.iter().any(|c| c == container))
            && (self.process.is_empty() || self.process.iter().any(|want| comm_matches(want, comm)))
    }
}

fn comm_matches(want: &str, comm: &str) -> bool {
    if comm.is_empty() {
        return false;
    }
    let want = want.as_bytes();
    let want = if want.len() > COMM_LEN {
        &want[..COMM_LEN]
    } else {
        want
    };
    want == comm.as_bytes()
}

/// What only the client can apply to the flows a server sends: the whitelist's process criteria,
/// and the blacklist as a whole when it has process criteria.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    white: ProcessFilter,
    black: ProcessFilter,
    /// The blacklist's `FlowFilter`s (kept here, not sent), compiled as a whitelist: any
    /// matches, none means all. Used only when `black` is set.
    black_rest: FlowFilters,
}

impl ClientFilter {
    /// `white` and `black` are the process criteria of the two lists; `blacklist` is the
    /// blacklist's server-side part, which stays with the client when `black` is set.
    pub fn new(
        white: ProcessFilter,
        black: ProcessFilter,
        blacklist: &[FlowFilter],
    ) -> Result<ClientFilter, FilterError> {
        let black_rest = if black.is_empty() {
            FlowFilters::default()
        } else {
            FlowFilters::new(blacklist, &[])?
        };
        Ok(ClientFilter {
            white,
            black,
            black_rest,
        })
    }

    /// True when it lets every flow through (no `--container` or `--process` was given).
    pub fn is_empty(&self) -> bool {
        self.white.is_empty() && self.black.is_empty()
    }

    /// Whether the client keeps a flow the server let through.
    pub fn matches(&self, f: &Flow) -> bool {
        if self.is_empty() {
            return true;
        }
        let p = process::get(f);
        if !self.white.matches(p.as_ref()) {
            return false;
        }
        let blacklisted =
            !self.black.is_empty() && self.black.matches(p.as_ref()) && self.black_rest.matches(f);
        !blacklisted
    }

    /// Whether the server may get the blacklist: not when it has process criteria, since the
    /// server would drop flows of other processes too.
    pub fn server_applies_blacklist(&self) -> bool {
        self.black.is_empty()
    }

    /// The process criteria of the whitelist and of the blacklist.
    pub fn process_filters(&self) -> (&ProcessFilter, &ProcessFilter) {
        (&self.white, &self.black)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Ip;

    fn flow(container: &str, comm: &str, dst: &str) -> Flow {
        let mut f = Flow {
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: dst.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        process::set(
            &mut f,
            &ProcessInfo {
                container: container.into(),
                process: comm.into(),
                pid: 7,
                uid: None,
            },
        );
        f
    }

    fn pf(container: &[&str], process: &[&str]) -> ProcessFilter {
        ProcessFilter {
            container: container.iter().map(|s| s.to_string()).collect(),
            process: process.iter().map(|s| s.to_string()).collect(),
        }
    }

    const IMDS: &str = "169.254.169.254";

    #[test]
    fn repeated_values_or_and_flags_and() {
        let envoy = flow("istio-proxy", "envoy", IMDS);
        let app = flow("app", "python3", IMDS);
        let w = pf(&["istio-proxy", "app"], &[]);
        assert!(w.matches(process::get(&envoy).as_ref()));
        assert!(w.matches(process::get(&app).as_ref()));
        let both = pf(&["istio-proxy"], &["envoy", "pilot-agent"]);
        assert!(both.matches(process::get(&envoy).as_ref()));
        assert!(!both.matches(process::get(&app).as_ref()));
        // A flow without process information matches no criterion.
        assert!(!pf(&["app"], &[]).matches(None));
        assert!(!pf(&[], &["envoy"]).matches(None));
        assert!(ProcessFilter::default().matches(None));
    }

    #[test]
    fn long_names_match_the_kernels_comm() {
        let f = flow("", "kube-controller", IMDS);
        let p = process::get(&f);
        assert!(pf(&[], &["kube-controller-manager"]).matches(p.as_ref()));
        assert!(pf(&[], &["kube-controller"]).matches(p.as_ref()));
        assert!(!pf(&[], &["kube-control"]).matches(p.as_ref()));
    }

    #[test]
    fn a_blacklist_with_process_criteria_stays_with_the_client() {
        let to_imds = FlowFilter {
            destination_ip: vec![IMDS.into()],
            ..Default::default()
        };
        // --not --to-ip IMDS --container istio-proxy: drop only the sidecar's IMDS flows.
        let c = ClientFilter::new(
            ProcessFilter::default(),
            pf(&["istio-proxy"], &[]),
            std::slice::from_ref(&to_imds),
        )
        .expect("compiles");
        assert!(!c.server_applies_blacklist());
        assert!(!c.matches(&flow("istio-proxy", "envoy", IMDS)));
        assert!(c.matches(&flow("istio-proxy", "envoy", "10.0.0.9")));
        assert!(c.matches(&flow("app", "curl", IMDS)));
        // --not --container istio-proxy alone: every flow of the sidecar.
        let c = ClientFilter::new(ProcessFilter::default(), pf(&["istio-proxy"], &[]), &[])
            .expect("compiles");
        assert!(!c.matches(&flow("istio-proxy", "envoy", "10.0.0.9")));
        assert!(c.matches(&Flow::default()));
        // Without process criteria in the blacklist, the server applies it.
        let c = ClientFilter::new(pf(&["app"], &[]), ProcessFilter::default(), &[to_imds])
            .expect("compiles");
        assert!(c.server_applies_blacklist());
        assert!(c.matches(&flow("app", "curl", IMDS)));
        assert!(!c.matches(&flow("istio-proxy", "envoy", IMDS)));
        assert!(ClientFilter::default().is_empty());
    }
}
