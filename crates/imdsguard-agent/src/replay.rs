//! `--replay-flows`: serves flows recorded with `hubble observe -o jsonpb`, for demos and UI
//! trials, as if they happened now.

use crate::{AgentError, ReplayConfig};
use imdsguard_flow::jsonline::FlowReader;
use imdsguard_hubble_proto::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_hubble_server::server::Hub;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Reads the file now (so a bad path stops the agent at start) and returns the task that feeds
/// its flows to `hub`, once or in a loop.
pub fn start(
    cfg: ReplayConfig,
    hub: Arc<Hub>,
) -> Result<impl Future<Output = ()> + Send + 'static, AgentError> {
    let flows = read_flows(&cfg.path)?;
    info!(
        "replaying {} flows from {}",
        flows.len(),
        cfg.path.display()
    );
    Ok(async move {
        loop {
            for resp in &flows {
                if let Some(ResponseTypes::Flow(f)) = &resp.response_types {
                    let mut f = f.clone();
                    if !cfg.keep_time {
                        f.time = Some(Timestamp::now());
                    }
                    hub.ingest(f);
                }
                if !cfg.interval.is_zero() {
                    tokio::time::sleep(cfg.interval).await;
                }
            }
            if !cfg.looped {
                break;
            }
            if cfg.interval.is_zero() {
                // A file replayed in a tight loop would starve nothing but still burn a core.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
}

/// Reads a recorded file; malformed lines are reported with their number and skipped.
fn read_flows(path: &Path) -> Result<Vec<GetFlowsResponse>, AgentError> {
    let reader =
        FlowReader::file(path).map_err(AgentError::io(format!("opening {}", path.display())))?;
    reader
        .read_all(|n, e| {
            warn!(
                error = %e,
                "{}:{n}: skipping a malformed line",
                path.display(),
            )
        })
        .map_err(AgentError::other(format!("reading {}", path.display())))
}
