//! The one reader of recorded flow files (`hubble observe -o jsonpb` lines, the flow exporter's
//! files): `observe --input-file`, `replay --flows` and the agent's `--replay-flows` all read
//! through it, so they skip the same lines and number them the same way.

use super::LineDecoder;
use crate::observer::GetFlowsResponse;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// JSON lines decoded one after another with a [`LineDecoder`], so reading allocates nothing per
/// line. Lines are counted from 1, blank lines included, so that messages name the line an editor
/// shows; blank lines are skipped.
pub struct FlowReader {
    name: String,
    input: Box<dyn BufRead>,
    size: Option<u64>,
    decoder: LineDecoder,
    text: String,
    number: usize,
    read: u64,
}

/// One non-blank line and what it decoded to.
pub struct Line<'a> {
    /// From 1, blank lines counted.
    pub number: usize,
    pub text: &'a str,
    /// The line as a response, or why it is none.
    pub decoded: Result<&'a GetFlowsResponse, serde_json::Error>,
}

/// The input could not be read (not: a line did not decode, which [`Line::decoded`] says).
#[derive(Debug, thiserror::Error)]
#[error("reading {name}")]
pub struct ReadError {
    pub name: String,
    #[source]
    pub source: io::Error,
}

impl FlowReader {
    /// `-` is stdin; anything else a file.
    pub fn open(path: &str) -> io::Result<FlowReader> {
        if path == "-" {
            Ok(FlowReader::new("-", Box::new(io::stdin().lock()), None))
        } else {
            FlowReader::file(Path::new(path))
        }
    }

    /// A file, named in messages as `path` displays.
    pub fn file(path: &Path) -> io::Result<FlowReader> {
        let file = File::open(path)?;
        let size = file.metadata().ok().map(|m| m.len());
        Ok(FlowReader::new(
            path.display().to_string(),
            Box::new(BufReader::with_capacity(1 << 16, file)),
            size,
        ))
    }

    /// Any reader; `size` (in bytes, if known) is for progress reports.
    pub fn new(name: impl Into<String>, input: Box<dyn BufRead>, size: Option<u64>) -> FlowReader {
        FlowReader {
            name: name.into(),
            input,
            size,
            decoder: LineDecoder::new(),
            text: String::new(),
            number: 0,
            read: 0,
        }
    }

    /// The next non-blank line, decoded; `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, ReadError> {
        loop {
            self.text.clear();
            let len = self
                .input
                .read_line(&mut self.text)
                .map_err(|source| ReadError {
                    name: self.name.clone(),
                    source,
                })?;
            if len == 0 {
                return Ok(None);
            }
            self.number += 1;
            self.read += len as u64;
            if !self.text.trim().is_empty() {
                break;
            }
        }
        Ok(Some(Line {
            number: self.number,
            text: &self.text,
            decoded: self.decoder.decode(&self.text),
        }))
    }

    /// Every response of the input, in order; each line that is none goes to `bad` with its number.
    pub fn read_all(
        mut self,
        mut bad: impl FnMut(usize, &serde_json::Error),
    ) -> Result<Vec<GetFlowsResponse>, ReadError> {
        let mut out = Vec::new();
        while let Some(line) = self.next_line()? {
            match line.decoded {
                Ok(resp) => out.push(resp.clone()),
                Err(e) => bad(line.number, &e),
            }
        }
        Ok(out)
    }

    /// How the input is named in messages: the path, or `-`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes read so far, and the input's size when it is a file.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.read, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::get_flows_response::ResponseTypes;

    const FLOW: &str = r#"{"flow":{"uuid":"a","verdict":"FORWARDED"},"node_name":"n"}"#;

    fn reader(text: &str) -> FlowReader {
        let input = io::Cursor::new(text.as_bytes().to_vec());
        FlowReader::new("mem", Box::new(input), Some(text.len() as u64))
    }

    #[test]
    fn lines_are_numbered_as_an_editor_shows_them() {
        let text = format!("{FLOW}\n\n  \nnot json\n{FLOW}");
        let mut r = reader(&text);
        let mut seen = Vec::new();
        while let Some(line) = r.next_line().expect("reads") {
            seen.push((line.number, line.decoded.is_ok(), line.text.trim().len()));
        }
        assert_eq!(
            seen,
            [(1, true, FLOW.len()), (4, false, 8), (5, true, FLOW.len())]
        );
        assert_eq!(r.progress(), (text.len() as u64, Some(text.len() as u64)));
        assert_eq!(r.name(), "mem");
    }

    #[test]
    fn read_all_keeps_responses_and_reports_the_rest() {
        let mut bad = Vec::new();
        let all = reader(&format!("{FLOW}\n{{\n\n{FLOW}\n"))
            .read_all(|n, _| bad.push(n))
            .expect("reads");
        assert_eq!(bad, [2]);
        assert_eq!(all.len(), 2);
        assert!(matches!(
            &all[1].response_types,
            Some(ResponseTypes::Flow(f)) if f.uuid == "a"
        ));
    }

    #[test]
    fn read_errors_name_the_input() {
        let mut r = FlowReader::new("bin", Box::new(io::Cursor::new(vec![0xff, b'\n'])), None);
        let err = r.next_line().map(|_| ()).expect_err("not UTF-8");
        assert_eq!(err.to_string(), "reading bin");
        assert!(FlowReader::open("/nonexistent/flows.jsonl").is_err());
    }
}
