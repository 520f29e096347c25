//! What imdsguard knows about cloud metadata services, in one place (docs/metadata-services.md):
//!
//! - `services`: the table of services (Azure IMDS and WireServer, AWS IMDS and the EKS Pod
//!   Identity agent, GCP's and GKE's metadata servers, Alibaba Cloud, OpenStack) with their
//!   addresses, ports and host names; lookups by address and port or by name; the prefixes the
//!   datapath keeps pods from by default.
//! - `request`: what an HTTP request to them asks for (a credential, for what and as whom, or
//!   plain metadata), and the requests real clients send.
//! - `percent`: the percent-decoder every reader of request targets uses.
//!
//! Pure: no I/O, no platform code. Limits: the table holds what the clouds document or what is
//! widely observed (the docs say which); it cannot tell which cloud is behind a shared address, and
//! it classifies requests by method, path, query and headers only, never by their answers.
//! Adding an endpoint is one row in `services::ENDPOINTS` and its tests.

pub mod percent;
pub mod request;
pub mod services;

pub use percent::{BadEscape, percent_decode, percent_decode_strict};
pub use request::{
    CredentialKind, CredentialRequest, Meaning, Refusal, RequestTarget, TYPICAL_REQUESTS,
    TypicalRequest, classify,
};
pub use services::{
    ALIBABA_METADATA_V4, AWS_IMDS_V6, Cloud, EKS_POD_IDENTITY_V4, EKS_POD_IDENTITY_V6, ENDPOINTS,
    Endpoint, GCP_METADATA_HOST, GCP_METADATA_V6, GKE_METADATA_PORT, GKE_METADATA_V4, IMDS_V4,
    Kind, OPENSTACK_METADATA_V6, Ports, Service, WIRESERVER, WIRESERVER_PORTS, endpoints_at,
    endpoints_named, is_metadata_address, kind_at, protected_prefixes, services_at,
};
