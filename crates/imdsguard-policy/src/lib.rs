//! imdsguard's policy engine: Cilium's CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and
//! CiliumCIDRGroup, read, validated and resolved into the verdicts Cilium 1.18 gives.
//!
//! Pipeline: [`decode`] turns manifests into [`api`] types (peers already translated into
//! selectors); a [`Repository`] holds policies, groups and endpoints, allocates [`Identity`]s and
//! resolves each endpoint identity into per-direction [`mapstate::MapState`] tables shaped like the
//! datapath's policy map; [`Repository::evaluate`] answers one flow. [`report`] words the
//! answers as `imdsguard policy check` and `policy trace` print them.
//!
//! Pure logic: no I/O and nothing Linux-specific. Limits: host policies (`nodeSelector`) are
//! validated but not enforced (there is no host endpoint); `toFQDNs` and `toServices` select
//! nothing; only HTTP is judged at L7 (Kafka, DNS and generic rules redirect but allow).

pub mod api;
pub mod audit;
pub mod decode;
pub mod endpoints_file;
pub mod identity;
pub mod ipcache;
pub mod l7;
pub mod labels;
pub mod mapstate;
pub mod report;
pub mod repository;
pub mod selector;
pub mod selectorcache;
pub mod store;
pub mod subjectindex;
pub mod verdict;

pub use api::{CidrGroup, Direction, Policy, PolicyKind, PolicyRef, Protocol};
pub use decode::{DecodeOptions, Decoded, PolicyError, Warning, decode_source, decode_sources};
pub use identity::Identity;
pub use l7::HttpRequest;
pub use mapstate::MatchType;
pub use repository::{
    AuditDirection, AuditView, EndpointSpec, Enforcement, EngineOptions, NamedPort, Repository,
};
pub use verdict::{DropReason, FlowQuery, FlowVerdict, Peer, Verdict};
