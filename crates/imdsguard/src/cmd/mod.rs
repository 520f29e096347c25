pub mod agent;
pub mod demo;
pub mod imds;
pub mod install;
pub mod lab;
pub mod observe;
pub mod policy;
pub mod replay;
pub mod status;

/// Runs one future on a runtime of its own: for the commands that make one call (a listing, an
/// apply, a stream) rather than serve.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(future))
}
