pub mod observe;
pub mod policy;
