//! An emulator of the cloud instance metadata services, for the lab and the tests: Azure IMDS
//! (spec imds.md §1: the Metadata header, X-Forwarded-For refused, api-version, the instance
//! document and its routes, managed-identity tokens, scheduled events, attested documents, rate
//! limits), AWS IMDSv2 (token PUT, TTL, X-Forwarded-For) and GCP (Metadata-Flavor).
//!
//! - `emulator`: the behaviour, a pure function of request and state.
//! - `server`: serves it over HTTP and logs every request, so a test can prove that a request the
//!   proxy denied never arrived.
//!
//! Limits: no TLS, no real tokens or signatures; the identity category's 5-concurrent-requests
//! limit is not enforced (only its 20 per second).

pub mod emulator;
pub mod server;
