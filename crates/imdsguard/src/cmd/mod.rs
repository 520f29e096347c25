pub mod agent;
pub mod observe;
pub mod policy;
