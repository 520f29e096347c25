pub mod agent;
pub mod enforce;
pub mod imds;
pub mod observe;
pub mod policy;
pub mod status;
