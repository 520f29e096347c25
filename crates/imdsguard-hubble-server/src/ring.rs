//! The flow ring buffer (docs/hubble.md#getflows-over-the-ring-buffer, Cilium's
//! `pkg/hubble/container/ring.go`): a fixed
//! number of the most recent entries, one writer (the agent's event loop) and any number of
//! concurrent readers, which may be polled (`try_next`) or follow the writer (`next().await`).
//!
//! * The capacity is `2^n − 1` (a requested capacity is rounded up; Cilium's default is 4095).
//!   The array has `2^n` slots: the spare slot is the one the writer overwrites next, so a
//!   reader that keeps up never touches the slot being written.
//! * Every pushed entry gets a sequence number (0, 1, 2, …); the entry with sequence `s` lives in
//!   slot `s mod 2^n` together with `s`. Each slot has its own small mutex, held only to store an
//!   entry (writer) or clone one (reader, an `Arc` clone). There is no lock shared by all readers,
//!   a reader never holds anything between calls, and the writer never waits for a reader to make
//!   progress: the worst case is a reader cloning the very slot being overwritten (a reader that
//!   has already fallen a whole ring behind), which costs the writer one `Arc` clone's worth of
//!   waiting.
//! * A reader that falls more than the capacity behind sees that its next sequence number is gone
//!   and gets [`Read::Lost`] with the exact number of entries it missed, then continues with the
//!   oldest entry still held. Over a reader's life, the sequence numbers of its items plus the
//!   counts of its losses cover every sequence number from its start exactly once.
//! * Following readers that have nothing to read park on a [`tokio::sync::Notify`]; the writer
//!   only touches it when at least one reader is parked (one atomic load per push otherwise).
//!
//! Unlike Cilium's ring, the newest entry is readable as soon as `push` returns, and a loss is
//! reported once with its count rather than once per missed entry.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Cilium's default `hubble-event-buffer-capacity`.
pub const DEFAULT_CAPACITY: usize = 4095;

/// Keeps a value on its own cache line(s), so the writer's and the readers' hot atomics and
/// neighbouring slots do not false-share.
#[repr(align(128))]
struct Padded<T>(T);

/// One slot: the sequence number of the entry it holds and the entry.
struct Slot<T>(Padded<Mutex<Option<(u64, T)>>>);

enum SlotRead<T> {
    /// The slot holds the wanted sequence number.
    Hit(T),
    /// The slot holds a newer entry: the wanted one was overwritten.
    Overwritten,
    /// The slot holds an older entry (cannot happen for a sequence number below `seen()`).
    NotYet,
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // Nothing can be left half-updated under these locks (a store or a clone), so a panic in a
    // foreign `Clone` must not wedge the ring.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fixed-size ring of the most recent entries (see the module docs).
pub struct Ring<T> {
    slots: Box<[Slot<T>]>,
    /// `slots.len() - 1`; `slots.len()` is a power of two.
    mask: u64,
    /// `slots.len() - 1`, the number of entries held once the ring is full.
    capacity: u64,
    /// Total entries ever pushed = the sequence number of the next entry. Published after the slot
    /// is written, so every sequence number below it is readable (unless overwritten since).
    head: Padded<AtomicU64>,
    /// Readers parked in [`Reader::next`] (or about to park).
    waiting: Padded<AtomicUsize>,
    notify: Notify,
    /// Serializes writers in case more than one task pushes; readers never touch it.
    writer: Mutex<()>,
}

/// The result of reading from a [`Reader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// The entry with this sequence number.
    Item(u64, T),
    /// This many entries were overwritten before the reader got to them; the reader now stands
    /// at the oldest entry still held.
    Lost(u64),
    /// Nothing to read yet (only from [`Reader::try_next`]).
    Empty,
}

/// A cursor into a [`Ring`]: the sequence number of the next entry to read. Cheap to create and
/// hold; holds no lock between calls.
pub struct Reader<T> {
    ring: Arc<Ring<T>>,
    pos: u64,
}

impl<T> Ring<T> {
    /// A ring holding at least `capacity` entries: the capacity is rounded up to `2^n − 1`
    /// (0 → 1, 4 → 7, 4095 → 4095, 4096 → 8191).
    ///
    /// # Panics
    /// If the rounded capacity does not fit in `usize`.
    pub fn new(capacity: usize) -> Arc<Ring<T>> {
        let slots = capacity
            .max(1)
            .checked_add(1)
            .and_then(usize::checked_next_power_of_two)
            .expect("ring capacity too large");
        Arc::new(Ring {
            slots: (0..slots).map(|_| Slot(Padded(Mutex::new(None)))).collect(),
            mask: slots as u64 - 1,
            capacity: slots as u64 - 1,
            head: Padded(AtomicU64::new(0)),
            waiting: Padded(AtomicUsize::new(0)),
            notify: Notify::new(),
            writer: Mutex::new(()),
        })
    }

    /// The maximum number of entries held (`2^n − 1`).
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The number of entries currently held.
    pub fn len(&self) -> usize {
        self.seen().min(self.capacity) as usize
    }

    /// Whether nothing was ever pushed.
    pub fn is_empty(&self) -> bool {
        self.seen() == 0
    }

    /// The total number of entries ever pushed, which is also the sequence number the next entry
    /// will get.
    pub fn seen(&self) -> u64 {
        self.head.0.load(Ordering::Acquire)
    }

    /// The sequence number of the oldest entry held (equal to [`Ring::seen`] when empty).
    pub fn oldest_seq(&self) -> u64 {
        self.seen().saturating_sub(self.capacity)
    }

    /// Appends an entry, overwriting the oldest one when full, and wakes following readers.
    /// Never waits for readers (see the module docs); the overwritten entry is dropped here.
    pub fn push(&self, item: T) {
        let old = {
            let _writer = lock(&self.writer);
            let seq = self.head.0.load(Ordering::Relaxed);
            let old = lock(&self.slot(seq).0.0).replace((seq, item));
            // SeqCst: pairs with the reader's `waiting` increment followed by its `head` load in
            // `Reader::next` (either we see the reader waiting, or it sees this entry).
            self.head.0.store(seq + 1, Ordering::SeqCst);
            old
        };
        if self.waiting.0.load(Ordering::SeqCst) != 0 {
            self.notify.notify_waiters();
        }
        drop(old);
    }

    /// A reader starting at the oldest entry held.
    pub fn reader_at_oldest(self: &Arc<Self>) -> Reader<T> {
        Reader {
            ring: Arc::clone(self),
            pos: self.oldest_seq(),
        }
    }

    /// A reader that sees only entries pushed after this call.
    pub fn reader_at_end(self: &Arc<Self>) -> Reader<T> {
        Reader {
            ring: Arc::clone(self),
            pos: self.seen(),
        }
    }

    /// A reader starting at sequence number `seq` (typically found with
    /// [`Ring::snapshot_newest_first`]). If that entry is already gone, the first read reports
    /// the loss; a `seq` beyond [`Ring::seen`] is clamped to it (the reader then sees only new
    /// entries).
    pub fn reader_at(self: &Arc<Self>, seq: u64) -> Reader<T> {
        Reader {
            ring: Arc::clone(self),
            pos: seq.min(self.seen()),
        }
    }

    fn slot(&self, seq: u64) -> &Slot<T> {
        // `mask < slots.len()`, so the index is in bounds and fits in usize.
        &self.slots[(seq & self.mask) as usize]
    }
}

impl<T: Clone> Ring<T> {
    /// All entries held, with their sequence numbers, newest first (for "last N" and `since`
    /// walks). Entries overwritten while walking end the walk, so the result is always a
    /// contiguous run of sequence numbers ending at the newest entry at the time of the call.
    pub fn snapshot_newest_first(&self) -> Vec<(u64, T)> {
        let head = self.seen();
        let oldest = head.saturating_sub(self.capacity);
        let mut out = Vec::with_capacity((head - oldest) as usize);
        for seq in (oldest..head).rev() {
            match self.read_slot(seq) {
                SlotRead::Hit(item) => out.push((seq, item)),
                SlotRead::Overwritten | SlotRead::NotYet => break,
            }
        }
        out
    }

    fn read_slot(&self, seq: u64) -> SlotRead<T> {
        let guard = lock(&self.slot(seq).0.0);
        match &*guard {
            Some((s, item)) if *s == seq => SlotRead::Hit(item.clone()),
            Some((s, _)) if *s > seq => SlotRead::Overwritten,
            _ => SlotRead::NotYet,
        }
    }

    /// One non-blocking read at `*pos`, advancing it past what was returned.
    fn read_at(&self, pos: &mut u64) -> Read<T> {
        loop {
            let head = self.seen();
            if *pos >= head {
                return Read::Empty;
            }
            let oldest = head.saturating_sub(self.capacity);
            if *pos < oldest {
                let lost = oldest - *pos;
                *pos = oldest;
                return Read::Lost(lost);
            }
            match self.read_slot(*pos) {
                SlotRead::Hit(item) => {
                    let seq = *pos;
                    *pos += 1;
                    return Read::Item(seq, item);
                }
                // Overwritten after we loaded `head`: the next `head` is far enough ahead that
                // the loop reports the loss.
                SlotRead::Overwritten => continue,
                // Unreachable (the entry is published before `head`), but never spin on it.
                SlotRead::NotYet => return Read::Empty,
            }
        }
    }
}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("seen", &self.seen())
            .field("waiting", &self.waiting.0.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts a reader as parked for as long as it lives (also when `next()` is cancelled).
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(waiting: &'a AtomicUsize) -> Parked<'a> {
        waiting.fetch_add(1, Ordering::SeqCst);
        Parked(waiting)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> Reader<T> {
    /// The sequence number of the next entry this reader will try to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The ring this reader reads.
    pub fn ring(&self) -> &Arc<Ring<T>> {
        &self.ring
    }
}

impl<T: Clone> Reader<T> {
    /// The next entry, a loss report, or [`Read::Empty`] if the reader has caught up.
    pub fn try_next(&mut self) -> Read<T> {
        self.ring.read_at(&mut self.pos)
    }

    /// The next entry or loss report, waiting for the writer if the reader has caught up. Never
    /// returns [`Read::Empty`].
    ///
    /// Cancel safe: the reader only advances when this returns, so dropping the future (e.g. in
    /// `tokio::select!`) loses nothing.
    pub async fn next(&mut self) -> Read<T> {
        loop {
            match self.ring.read_at(&mut self.pos) {
                Read::Empty => {}
                read => return read,
            }
            // Take the notification ticket first, then announce we are waiting, then look again:
            // a push after the ticket wakes it, and a push the writer made without seeing us
            // waiting is visible to the second look (both sides use SeqCst; see `push`).
            let notified = self.ring.notify.notified();
            let _parked = Parked::new(&self.ring.waiting.0);
            match self.ring.read_at(&mut self.pos) {
                Read::Empty => {}
                read => return read,
            }
            notified.await;
        }
    }
}

impl<T> Clone for Reader<T> {
    fn clone(&self) -> Self {
        Reader {
            ring: Arc::clone(&self.ring),
            pos: self.pos,
        }
    }
}

impl<T> fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("pos", &self.pos)
            .field("ring", &self.ring)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    fn items(reader: &mut Reader<u64>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        loop {
            match reader.try_next() {
                Read::Item(seq, v) => out.push((seq, v)),
                Read::Lost(n) => panic!("unexpected Lost({n})"),
                Read::Empty => return out,
            }
        }
    }

    #[test]
    fn capacity_is_rounded_up_to_two_to_the_n_minus_one() {
        for (asked, got) in [
            (0, 1),
            (1, 1),
            (2, 3),
            (3, 3),
            (4, 7),
            (7, 7),
            (8, 15),
            (4095, 4095),
            (4096, 8191),
        ] {
            let ring = Ring::<u64>::new(asked);
            assert_eq!(ring.capacity(), got, "asked {asked}");
            assert_eq!(ring.len(), 0);
            assert!(ring.is_empty());
        }
        assert_eq!(Ring::<u64>::new(DEFAULT_CAPACITY).capacity(), 4095);
    }

    #[test]
    fn entries_come_out_in_order_with_their_sequence_numbers() {
        let ring = Ring::new(7);
        let mut reader = ring.reader_at_oldest();
        assert_eq!(reader.try_next(), Read::Empty);
        for v in 0..5u64 {
            ring.push(v * 10);
        }
        assert_eq!(ring.len(), 5);
        assert_eq!(ring.seen(), 5);
        assert_eq!(
            items(&mut reader),
            vec![(0, 0), (1, 10), (2, 20), (3, 30), (4, 40)]
        );
        ring.push(50);
        assert_eq!(reader.try_next(), Read::Item(5, 50));
        assert_eq!(reader.try_next(), Read::Empty);
        // A second reader from the oldest sees the same entries.
        let mut again = ring.reader_at_oldest();
        assert_eq!(items(&mut again).len(), 6);
    }

    #[test]
    fn overwrite_reports_exactly_the_number_lost() {
        let ring = Ring::new(7);
        let mut reader = ring.reader_at_oldest();
        for v in 0..3u64 {
            ring.push(v);
        }
        assert_eq!(reader.try_next(), Read::Item(0, 0));
        // 20 entries in all; the ring holds 13..=19, the reader stands at 1.
        for v in 3..20u64 {
            ring.push(v);
        }
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.seen(), 20);
        assert_eq!(ring.oldest_seq(), 13);
        assert_eq!(reader.try_next(), Read::Lost(12));
        assert_eq!(reader.position(), 13);
        assert_eq!(
            items(&mut reader),
            (13..20).map(|v| (v, v)).collect::<Vec<_>>()
        );

        // A reader from the oldest of a full ring loses nothing.
        let mut fresh = ring.reader_at_oldest();
        assert_eq!(items(&mut fresh).len(), 7);
    }

    #[test]
    fn reader_at_end_sees_only_new_entries() {
        let ring = Ring::new(15);
        for v in 0..10u64 {
            ring.push(v);
        }
        let mut reader = ring.reader_at_end();
        assert_eq!(reader.try_next(), Read::Empty);
        ring.push(100);
        ring.push(101);
        assert_eq!(items(&mut reader), vec![(10, 100), (11, 101)]);
    }

    #[test]
    fn snapshot_and_reader_at() {
        let ring = Ring::new(3);
        assert!(ring.snapshot_newest_first().is_empty());
        for v in 0..10u64 {
            ring.push(v);
        }
        assert_eq!(ring.snapshot_newest_first(), vec![(9, 9), (8, 8), (7, 7)]);
        let mut reader = ring.reader_at(8);
        assert_eq!(items(&mut reader), vec![(8, 8), (9, 9)]);
        // Already overwritten: the loss is reported first.
        let mut reader = ring.reader_at(2);
        assert_eq!(reader.try_next(), Read::Lost(5));
        assert_eq!(items(&mut reader), vec![(7, 7), (8, 8), (9, 9)]);
        // In the future: clamped to the end.
        let mut reader = ring.reader_at(1_000);
        assert_eq!(reader.position(), 10);
        ring.push(10);
        assert_eq!(items(&mut reader), vec![(10, 10)]);
    }

    #[test]
    fn overwritten_entries_are_dropped() {
        let ring = Ring::new(3);
        let first = Arc::new(0u64);
        ring.push(Arc::clone(&first));
        assert_eq!(Arc::strong_count(&first), 2);
        for v in 1..10u64 {
            ring.push(Arc::new(v));
        }
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn slow_reader_never_blocks_the_writer() {
        const TOTAL: u64 = 1_000_000;
        let ring = Ring::<u64>::new(DEFAULT_CAPACITY);
        let mut sleeper = ring.reader_at_oldest();
        // Another reader that keeps reading the slots around the writer, slowly.
        let mut nibbler = ring.reader_at_oldest();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let nibbler = thread::spawn(move || {
            let (mut got, mut lost) = (0u64, 0u64);
            let mut stopping = false;
            loop {
                match nibbler.try_next() {
                    Read::Item(..) => got += 1,
                    Read::Lost(n) => lost += n,
                    Read::Empty if stopping => return (got, lost, nibbler.position()),
                    Read::Empty => {}
                }
                if !stopping {
                    stopping = stop_rx.try_recv().is_ok();
                    thread::sleep(Duration::from_micros(50));
                }
            }
        });

        let (done_tx, done_rx) = mpsc::channel();
        let writer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let start = Instant::now();
                for v in 0..TOTAL {
                    ring.push(v);
                }
                done_tx.send(start.elapsed()).unwrap();
            })
        };
        // The sleeping reader does nothing until the writer is done; if the writer waited for
        // it, this would time out.
        let took = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("writer blocked");
        writer.join().unwrap();
        stop_tx.send(()).unwrap();
        let (got, lost, pos) = nibbler.join().unwrap();
        assert_eq!(got + lost, TOTAL);
        assert_eq!(pos, TOTAL);
        eprintln!("1M pushes with a sleeping and a slow reader: {took:?}");

        let cap = ring.capacity() as u64;
        assert_eq!(sleeper.try_next(), Read::Lost(TOTAL - cap));
        let rest: Vec<_> = items(&mut sleeper);
        assert_eq!(rest.len() as u64, cap);
        assert!(
            rest.iter()
                .zip(TOTAL - cap..)
                .all(|(&(seq, v), want)| seq == want && v == want)
        );
        assert_eq!(sleeper.try_next(), Read::Empty);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writer_and_four_following_readers() {
        const TOTAL: u64 = 300_000;
        let ring = Ring::<u64>::new(63);
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let mut reader = ring.reader_at_end();
                tokio::spawn(async move {
                    let (mut expect, mut got, mut lost, mut lost_reports) =
                        (0u64, 0u64, 0u64, 0u64);
                    while expect < TOTAL {
                        match reader.next().await {
                            Read::Item(seq, v) => {
                                assert_eq!(seq, expect, "out of order or unreported gap");
                                assert_eq!(v, seq * 3);
                                expect += 1;
                                got += 1;
                            }
                            Read::Lost(n) => {
                                assert!(n > 0);
                                expect += n;
                                lost += n;
                                lost_reports += 1;
                            }
                            Read::Empty => panic!("next() returned Empty"),
                        }
                    }
                    assert_eq!(expect, TOTAL);
                    (got, lost, lost_reports)
                })
            })
            .collect();

        let writer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                for v in 0..TOTAL {
                    ring.push(v * 3);
                    // Bursts and pauses, so readers both fall behind and catch up and park.
                    if v % 1_000 == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        for reader in readers {
            let (got, lost, reports) = tokio::time::timeout(Duration::from_secs(120), reader)
                .await
                .expect("reader stuck")
                .unwrap();
            assert_eq!(got + lost, TOTAL);
            eprintln!("reader: {got} items, {lost} lost in {reports} reports");
        }
        writer.join().unwrap();
        assert_eq!(ring.waiting.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_following_reader_is_woken_by_a_later_push() {
        let ring = Ring::<u64>::new(15);
        ring.push(1);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut reader = ring.reader_at_end();
                tokio::spawn(async move { (reader.next().await, reader.next().await) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        ring.push(7);
        tokio::time::sleep(Duration::from_millis(20)).await;
        ring.push(8);
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("not woken")
                .unwrap();
            assert_eq!(got, (Read::Item(1, 7), Read::Item(2, 8)));
        }
        assert_eq!(ring.waiting.0.load(Ordering::SeqCst), 0);
    }

    /// Ping-pong: every push happens while the reader is about to park or parked, so a lost
    /// wake-up hangs (and times out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_lost_wake_ups() {
        const ROUNDS: u64 = 20_000;
        let ring = Ring::<u64>::new(7);
        let mut reader = ring.reader_at_end();
        let (ack_tx, ack_rx) = mpsc::channel();
        let follower = tokio::spawn(async move {
            for want in 0..ROUNDS {
                assert_eq!(reader.next().await, Read::Item(want, want));
                ack_tx.send(()).unwrap();
            }
        });
        let writer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                for v in 0..ROUNDS {
                    ring.push(v);
                    ack_rx
                        .recv_timeout(Duration::from_secs(10))
                        .expect("lost wake-up");
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(120), follower)
            .await
            .expect("lost wake-up")
            .unwrap();
        tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn next_is_cancel_safe() {
        let ring = Ring::<u64>::new(15);
        let mut reader = ring.reader_at_end();
        let timed_out = tokio::time::timeout(Duration::from_millis(20), reader.next()).await;
        assert!(timed_out.is_err());
        assert_eq!(ring.waiting.0.load(Ordering::SeqCst), 0);
        ring.push(5);
        assert_eq!(reader.next().await, Read::Item(0, 5));
    }

    /// `cargo test --release -p imdsguard-hubble-server ring::tests::push_rate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn push_rate() {
        use imdsguard_hubble_proto::observer::GetFlowsResponse;
        const N: u64 = 10_000_000;
        let entry = Arc::new(GetFlowsResponse::default());

        let ring = Ring::<Arc<GetFlowsResponse>>::new(DEFAULT_CAPACITY);
        let start = Instant::now();
        for _ in 0..N {
            ring.push(Arc::clone(&entry));
        }
        let took = start.elapsed();
        println!(
            "no readers:          {:>12.0} pushes/s ({N} in {took:?})",
            N as f64 / took.as_secs_f64()
        );

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ring = Ring::<Arc<GetFlowsResponse>>::new(DEFAULT_CAPACITY);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut reader = ring.reader_at_end();
                rt.spawn(async move {
                    let (mut got, mut lost) = (0u64, 0u64);
                    while reader.position() < N {
                        match reader.next().await {
                            Read::Item(..) => got += 1,
                            Read::Lost(n) => lost += n,
                            Read::Empty => unreachable!(),
                        }
                    }
                    (got, lost)
                })
            })
            .collect();
        let start = Instant::now();
        for _ in 0..N {
            ring.push(Arc::clone(&entry));
        }
        let took = start.elapsed();
        println!(
            "2 following readers: {:>12.0} pushes/s ({N} in {took:?})",
            N as f64 / took.as_secs_f64()
        );
        for reader in readers {
            let (got, lost) = rt.block_on(reader).unwrap();
            println!("  reader: {got} items, {lost} lost");
        }
    }
}
