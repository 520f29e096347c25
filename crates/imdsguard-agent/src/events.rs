//! The datapath's events become flows on a thread of their own. The ring buffer has no wake-ups
//! (they would cost per event), so it is read every few milliseconds; a slow policy resolution
//! in the reconciliation loop never holds flows back. Flows that name their socket are recorded
//! in [`Sockets`], where the proxy's flows of the same connection find it.

use crate::node_view::SharedView;
use crate::sockets::Sockets;
use imdsguard_datapath::flows::to_flow;
use imdsguard_datapath::loader::EventReader;
use imdsguard_hubble_server::server::Hub;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the drain sleeps when the ring buffer is empty.
const IDLE: Duration = Duration::from_millis(10);

/// Drains `events` into `hub` until `stop` is set, naming flows with the current view, and
/// recording their sockets for the proxy's flows.
pub fn spawn_drain(
    mut events: EventReader,
    view: Arc<SharedView>,
    sockets: Arc<Sockets>,
    hub: Arc<Hub>,
    node: String,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let offset = wall_offset_ns();
    std::thread::Builder::new()
        .name("datapath-events".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let v = view.load();
                let n = events.drain(|e| {
                    let f = to_flow(&e, &*v, &node, offset);
                    sockets.record(&f);
                    hub.ingest(f)
                });
                if n == 0 {
                    std::thread::sleep(IDLE);
                }
            }
        })
}

/// Wall time minus CLOCK_MONOTONIC, in nanoseconds: datapath events carry monotonic time.
// time_t is not i64 on every target.
#[allow(clippy::useless_conversion)]
fn wall_offset_ns() -> i64 {
    let mono = |clock| {
        // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
    };
    mono(libc::CLOCK_REALTIME) - mono(libc::CLOCK_MONOTONIC)
}
