//! The datapath's output: the event ring buffer and the per-CPU counters.

use super::{Datapath, Result, map_err};
use crate::abi::{COUNTER_NAMES, Event};
use aya::maps::{MapData, RingBuf};

impl Datapath {
    /// The counters, summed over CPUs, named as `COUNTER_NAMES`.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let per_cpu = self.counters.get(&0, 0).map_err(map_err("counters"))?;
        Ok(sum_counters(per_cpu.iter()))
    }

    /// The event ring buffer, once: its reader polls it (events do not wake anyone).
    pub fn take_events(&mut self) -> Option<EventReader> {
        self.events.take().map(|ring| EventReader { ring })
    }
}

/// Reads datapath events. The programs submit without a wake-up, so call `drain` on a timer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Hands every pending event to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(e) = Event::decode(&item) {
                f(e);
                n += 1;
            }
        }
        n
    }
}

pub(super) const COUNTERS: usize = COUNTER_NAMES.len();

/// Sums the per-CPU counter sets into named totals.
pub(super) fn sum_counters<'a>(
    per_cpu: impl Iterator<Item = &'a [u64; COUNTERS]>,
) -> Vec<(&'static str, u64)> {
    let mut total = [0u64; COUNTERS];
    for set in per_cpu {
        for (t, v) in total.iter_mut().zip(set) {
            *t += v;
        }
    }
    COUNTER_NAMES.iter().copied().zip(total).collect()
}
