//! Decodes a file of flow JSON lines with `LineDecoder`, `ROUNDS` times (default 1), and prints
//! lines/s and how many lines took the fast path: the reader's throughput apart from I/O and
//! printing (BENCHMARKS.md). `cargo run --release -p imdsguard-flow --example decode_lines -- FILE [ROUNDS]`

use imdsguard_flow::jsonline::LineDecoder;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: decode_lines FILE [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(1), |r| r.parse())?;
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut d = LineDecoder::new();
    let mut errors = 0u64;
    let start = Instant::now();
    for _ in 0..rounds {
        for line in &lines {
            if d.decode(line).is_err() {
                errors += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (lines.len() * rounds) as f64;
    let (fast, generic) = d.counts();
    println!(
        "{n} lines in {secs:.3} s: {:.0} k lines/s; fast {fast}, generic {generic}, errors {errors}",
        n / secs / 1e3
    );
    Ok(())
}
