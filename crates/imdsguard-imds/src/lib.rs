//! An emulator of the cloud instance metadata services, for the lab and the tests: Azure IMDS
//! (docs/metadata-services.md: the Metadata header, X-Forwarded-For refused, api-version, the
//! instance document and its routes, managed-identity tokens, scheduled events, attested documents,
//! rate limits), AWS IMDSv2 (token PUT, TTL, X-Forwarded-For, the role's credentials) and GCP
//! (Metadata-Flavor, directories, `recursive=true`, tokens). azure-identity, boto3 and google-auth
//! get their tokens and credentials from it as from the real services (tests/sdk.rs here on
//! loopback, crates/imdsguard/tests/sdk.rs in lab pods; docs/lab.md).
//!
//! - `emulator`: the behaviour, a pure function of request and state.
//! - `gcp`: GCP's metadata server in detail (directories, `recursive=true`, tokens), which the
//!   emulator serves for the gcp flavour.
//! - `server`: serves it over HTTP and logs every request, so a test can prove that a request the
//!   proxy denied never arrived.
//!
//! Limits: no TLS, no real tokens or signatures; the identity category's 5-concurrent-requests
//! limit is not enforced (only its 20 per second).

pub mod emulator;
pub mod gcp;
pub mod server;
