//! Kubernetes and Cilium label syntax, shared by the flow filters (`imdsguard-flow`) and the policy
//! engine (`imdsguard-policy`) so that both read labels and selectors by the same rules:
//!
//! * [`names`]: Kubernetes' rules for label keys (`validation.IsQualifiedName`) and values;
//! * [`cilium`]: Cilium's label strings (`k8s:app=web`, `$host`, `reserved.world`) and CIDR label
//!   keys (`cidr:10.0.0.0/8`, IPv6 with `-` for `:`);
//! * [`selector`]: the Kubernetes label-selector language (`app=web, tier notin (db)`, as
//!   `k8s.io/apimachinery/pkg/labels` parses it) over keys in Cilium's `source.key` form, matched
//!   against a list of Cilium label strings such as a flow's.
//!
//! Pure logic: no I/O, no allocation when matching. Limits: the engine's structured selectors
//! (`matchLabels`/`matchExpressions` over an identity's sorted label set) stay in
//! `imdsguard-policy`, which uses the name rules and CIDR keys from here but matches by its own
//! rules (see `imdsguard_policy::selector`); set-based selectors cannot express `>`/`<` there.

pub mod cilium;
pub mod names;
pub mod selector;

pub use cilium::{cidr_prefix, parse_label, prefix_contains};
pub use names::{NameError, check_label_value, check_qualified_name, is_dns1123_subdomain};
pub use selector::{LabelSelector, SelectorError};
