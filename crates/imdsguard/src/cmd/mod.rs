pub mod agent;
pub mod demo;
pub mod enforce;
pub mod imds;
pub mod lab;
pub mod observe;
pub mod policy;
pub mod status;
