//! `imdsguard agent`: the node agent. Its flags and the configuration made from them are
//! `imdsguard_agent::args`; the agent itself is the `imdsguard-agent` library. With `--endpoints`
//! (and `--policies`) or a cluster it enforces through the eBPF datapath; with `--replay-flows`
//! it serves recorded flows. Whenever it has a cluster (`--kubeconfig`, or a pod's service
//! account), even with `--replay-flows`, its Hubble Peer service announces the cluster's nodes
//! to Relay.

use anyhow::{Context, Result};
use imdsguard_agent::logging;
use std::process::ExitCode;
use tracing::error;

pub use imdsguard_agent::args::AgentArgs;

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    logging::init(&args.log);
    let result = args.config().map_err(anyhow::Error::from).and_then(|cfg| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(rt.block_on(imdsguard_agent::run(cfg))?)
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // In the log's format, so that every line a log pipeline reads parses.
            error!(error = format!("{e:#}"), "the agent stopped");
            Ok(ExitCode::from(2))
        }
    }
}
