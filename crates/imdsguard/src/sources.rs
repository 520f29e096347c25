//! Reading manifest files lives with the agent, which watches them; the offline commands use the
//! same reader.

pub use imdsguard_agent::sources::load;
