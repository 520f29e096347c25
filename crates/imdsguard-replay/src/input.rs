//! Recorded flows read into a [`Replay`]: `hubble observe -o jsonpb` lines, or bare `Flow`
//! objects, through the one flow-file reader.

use crate::Replay;
use imdsguard_flow::jsonline::{FlowReader, ReadError};
use imdsguard_flow::observer::get_flows_response::ResponseTypes;
use std::io::Write;
use std::time::{Duration, Instant};

/// Malformed lines reported one by one; past these, only counted.
const REPORTED_BAD_LINES: usize = 5;

/// Progress shows for files at least this large.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

impl Replay {
    /// Judges every flow `reader` yields. Malformed lines are reported on `warn` (the first few)
    /// and counted; with `progress`, a line on `warn` shows how far a large file is. `warn` is
    /// best effort. Returns the number of malformed lines.
    pub fn read(
        &mut self,
        reader: &mut FlowReader,
        progress: bool,
        warn: &mut dyn Write,
    ) -> Result<usize, ReadError> {
        let mut progress = match reader.progress() {
            (_, Some(size)) if progress && size >= PROGRESS_MIN_BYTES => Some(Progress::new(size)),
            _ => None,
        };
        let name = reader.name().to_owned();
        let mut bad = 0usize;
        while let Some(line) = reader.next_line()? {
            let number = line.number;
            match line.decoded {
                Ok(resp) => match &resp.response_types {
                    Some(ResponseTypes::Flow(flow)) => self.observe(flow),
                    // Node status, lost events … carry no flow.
                    Some(_) => {}
                    // Unknown fields are ignored, so a bare Flow object decodes to an empty
                    // response.
                    None => match imdsguard_flow::extensions::decode_flow(line.text) {
                        Ok(flow) if flow.ip.is_some() || flow.source.is_some() => {
                            self.observe(&flow)
                        }
                        _ => {}
                    },
                },
                Err(e) => {
                    if bad < REPORTED_BAD_LINES {
                        let _ = writeln!(
                            warn,
                            "{name}:{number}: skipping a line that is not a flow: {e}"
                        );
                    }
                    bad += 1;
                }
            }
            if let Some(p) = &mut progress
                && number % 4096 == 0
            {
                p.show(warn, reader.progress().0, self.totals().flows);
            }
        }
        if let Some(p) = &progress {
            p.clear(warn);
        }
        if bad > 0 {
            let _ = writeln!(warn, "{bad} malformed line(s) skipped");
        }
        Ok(bad)
    }
}

/// A progress line, at most once a second.
struct Progress {
    size: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(size: u64) -> Progress {
        let now = Instant::now();
        Progress {
            size,
            start: now,
            last: now,
        }
    }

    fn show(&mut self, warn: &mut dyn Write, read: u64, flows: u64) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let _ = write!(
            warn,
            "\rreplay: {flows} flows, {:.0}% of the file, {:.0} flows/s   ",
            read as f64 * 100.0 / self.size.max(1) as f64,
            flows as f64 / secs
        );
    }

    fn clear(&self, warn: &mut dyn Write) {
        let _ = write!(warn, "\r{:60}\r", "");
    }
}

#[cfg(test)]
mod tests {
    use crate::{GroupBy, Inputs, Replay, TextOptions};
    use imdsguard_flow::jsonline::FlowReader;
    use imdsguard_policy::{EngineOptions, Repository};

    const SEED: &str = include_str!("../../../tests/flows/seed.jsonl");

    fn read(text: &str) -> (Replay, usize, String) {
        let mut replay = Replay::new(Repository::new(EngineOptions::default()), GroupBy::Pod);
        let input = std::io::Cursor::new(text.as_bytes().to_vec());
        let mut reader = FlowReader::new("mem", Box::new(input), None);
        let mut warn = Vec::new();
        let bad = replay.read(&mut reader, true, &mut warn).expect("reads");
        (replay, bad, String::from_utf8(warn).expect("utf-8"))
    }

    #[test]
    fn bare_flows_count_and_bad_lines_are_reported_five_at_most() {
        let first = SEED.lines().next().expect("a seed flow");
        let doc: serde_json::Value = serde_json::from_str(first).expect("json");
        let bare = doc["flow"].to_string();
        let text = format!("{first}\n{bare}\n\n{}", "{\n".repeat(7));
        let (replay, bad, warn) = read(&text);
        assert_eq!(replay.totals().flows, 2);
        assert_eq!(bad, 7);
        let lines: Vec<&str> = warn.lines().collect();
        assert_eq!(lines.len(), 6, "{warn}");
        assert!(lines[0].starts_with("mem:4: skipping a line that is not a flow: "));
        assert_eq!(lines[5], "7 malformed line(s) skipped");
    }

    #[test]
    fn the_text_report_names_its_inputs() {
        let (replay, bad, warn) = read(SEED);
        assert_eq!((bad, warn.as_str()), (0, ""));
        let inputs = Inputs {
            flows: "seed.jsonl",
            policies: 1,
            cidr_groups: 0,
        };
        let opts = TextOptions {
            details: false,
            group_by: GroupBy::Pod,
        };
        let mut out = Vec::new();
        replay
            .report()
            .write_text(&mut out, &inputs, opts)
            .expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with(&format!(
                "Replayed {} flows from seed.jsonl under 1 policy and 0 CIDR groups.\n",
                SEED.lines().count()
            )),
            "{text}"
        );
        let mut json = Vec::new();
        replay
            .report()
            .write_json(&mut json, &inputs)
            .expect("writes");
        let doc: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(doc["cidrGroups"], 0);
        assert_eq!(doc["flows"], "seed.jsonl");
    }

    /// A recording mixes flows with process information and flows without: a flow without it
    /// must not take the container of the flow before it.
    #[test]
    fn process_information_stays_with_its_own_line() {
        use imdsguard_flow::observer::GetFlowsResponse;
        use imdsguard_flow::observer::get_flows_response::ResponseTypes;
        use imdsguard_hubble_proto::process::{self, ProcessInfo};
        let first = SEED.lines().next().expect("a seed flow");
        let mut resp: GetFlowsResponse = serde_json::from_str(first).expect("json");
        let Some(ResponseTypes::Flow(f)) = &mut resp.response_types else {
            panic!("a flow line");
        };
        process::set(
            f,
            &ProcessInfo {
                container: "istio-proxy".into(),
                process: "envoy".into(),
                pid: 4242,
                uid: Some(1337),
            },
        );
        let attributed = serde_json::to_string(&resp).expect("encodes");
        let text = format!("{attributed}\n{first}\n{first}\n{attributed}\n");
        let (replay, bad, warn) = read(&text);
        assert_eq!((bad, warn.as_str()), (0, ""));
        let report = replay.report();
        let mut groups: Vec<(Option<&str>, u64)> = report
            .groups
            .iter()
            .map(|g| (g.key.container.as_deref(), g.flows))
            .collect();
        groups.sort();
        assert_eq!(groups, [(None, 2), (Some("istio-proxy"), 2)]);
    }
}
