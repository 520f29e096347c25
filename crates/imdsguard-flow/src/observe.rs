//! `hubble observe` apart from its transport: filter flags into a request's whitelist and
//! blacklist, the output options, the printer, and the loop over a recorded file (`--input-file`)
//! with `--since`, `--until`, `--first` and `--last`. A server's stream is printed by the same
//! [`Printer`] (the gRPC client is `imdsguard_hubble_server::client`).
//!
//! The error texts are the command line's: they name its flags.

use crate::filter::{FilterError, FlowFilters};
use crate::filterflags::FilterBuilder;
use crate::flow::FlowFilter;
use crate::jsonline::{FlowReader, ReadError};
use crate::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes};
use crate::printer::{self, PrintOptions, Table, TimeFormat};
use crate::timespec;
use imdsguard_hubble_proto::wkt::Timestamp;
use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};

/// Why `observe` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A filter flag's value was refused as it was added.
    #[error("invalid filter --{flag}: {error}")]
    Flag { flag: String, error: FilterError },
    /// The filters as a whole were refused (a trailing `--not`, a bad CIDR …).
    #[error(transparent)]
    Filters(FilterError),
    #[error("invalid output format {0:?}: use compact, dict, json, jsonpb or table")]
    Format(String),
    #[error("unknown --time-format {0:?}")]
    TimeFormat(String),
    #[error("invalid --since {0:?}")]
    Since(String),
    #[error("invalid --until {0:?}")]
    Until(String),
    #[error("the table output format cannot be used with --follow")]
    TableFollow,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The whitelist and blacklist of filter flags given in command-line order (long names without
/// dashes, `""` for switches): `--not` applies to the next flag only.
pub fn build_filters(
    flags: &[(String, String)],
) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), ObserveError> {
    let mut builder = FilterBuilder::new();
    for (flag, value) in flags {
        builder
            .add(flag, value)
            .map_err(|error| ObserveError::Flag {
                flag: flag.clone(),
                error,
            })?;
    }
    builder.build().map_err(ObserveError::Filters)
}

/// `--print-raw-filters`: the lists as Hubble prints them, YAML lists of `FlowFilter` JSON.
pub fn write_raw_filters(
    out: &mut impl Write,
    whitelist: &[FlowFilter],
    blacklist: &[FlowFilter],
) -> Result<(), ObserveError> {
    writeln!(out, "allowlist:")?;
    for f in whitelist {
        writeln!(out, "    - '{}'", serde_json::to_string(f)?)?;
    }
    writeln!(out, "denylist:")?;
    for f in blacklist {
        writeln!(out, "    - '{}'", serde_json::to_string(f)?)?;
    }
    Ok(())
}

/// The options of `hubble observe` other than filters and the flow source, as typed.
#[derive(Debug, Clone)]
pub struct ObserveOptions {
    /// compact, dict, json (or jsonpb, JSON), table (or tab).
    pub output: String,
    /// A [`TimeFormat`] name.
    pub time_format: String,
    /// A duration before `now` or an RFC 3339 time.
    pub since: Option<String>,
    pub until: Option<String>,
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub all: bool,
    pub follow: bool,
    pub print_node_name: bool,
    pub print_policy_names: bool,
    pub numeric: bool,
}

impl Default for ObserveOptions {
    /// Hubble's defaults: compact lines, `StampMilli` times, no time window or count.
    fn default() -> ObserveOptions {
        ObserveOptions {
            output: "compact".into(),
            time_format: "StampMilli".into(),
            since: None,
            until: None,
            first: None,
            last: None,
            all: false,
            follow: false,
            print_node_name: false,
            print_policy_names: false,
            numeric: false,
        }
    }
}

/// One `observe` run: its filters compiled and its options checked.
pub struct Observe {
    whitelist: Vec<FlowFilter>,
    blacklist: Vec<FlowFilter>,
    filters: FlowFilters,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    first: Option<u64>,
    last: Option<u64>,
    all: bool,
    follow: bool,
    printer: Printer,
}

impl Observe {
    /// Checks in the order Hubble does: filters, output format, time format, `--since`,
    /// `--until` (relative to `now`).
    pub fn new(
        opts: &ObserveOptions,
        whitelist: Vec<FlowFilter>,
        blacklist: Vec<FlowFilter>,
        now: Timestamp,
    ) -> Result<Observe, ObserveError> {
        let filters = FlowFilters::new(&whitelist, &blacklist).map_err(ObserveError::Filters)?;
        let format = Format::parse(&opts.output)?;
        let time_format = TimeFormat::parse(&opts.time_format)
            .ok_or_else(|| ObserveError::TimeFormat(opts.time_format.clone()))?;
        let time = |s: &Option<String>, err: fn(String) -> ObserveError| {
            s.as_deref()
                .map(|s| timespec::parse(s, now).ok_or_else(|| err(s.to_owned())))
                .transpose()
        };
        let since = time(&opts.since, ObserveError::Since)?;
        let until = time(&opts.until, ObserveError::Until)?;
        let print = PrintOptions {
            node_name: opts.print_node_name,
            policy_names: opts.print_policy_names,
            numeric: opts.numeric,
            time_format,
        };
        Ok(Observe {
            whitelist,
            blacklist,
            filters,
            since,
            until,
            first: opts.first,
            last: opts.last,
            all: opts.all,
            follow: opts.follow,
            printer: Printer::new(format, print),
        })
    }

    /// The request for a server, with Hubble's defaults: 20 flows unless `--first`, `--last`,
    /// `--all`, `--follow` or `--since` say otherwise.
    pub fn request(&self) -> Result<GetFlowsRequest, ObserveError> {
        if self.follow && matches!(self.printer.format, Format::Table) {
            return Err(ObserveError::TableFollow);
        }
        let number = match (self.first, self.last, self.all) {
            (Some(n), _, _) | (_, Some(n), _) => n,
            (_, _, true) => u64::MAX,
            _ if self.follow || self.since.is_some() => 0,
            _ => 20,
        };
        Ok(GetFlowsRequest {
            number,
            first: self.first.is_some(),
            follow: self.follow,
            whitelist: self.whitelist.clone(),
            blacklist: self.blacklist.clone(),
            since: self.since,
            until: if self.follow { None } else { self.until },
            ..Default::default()
        })
    }

    /// Prints what a server sends.
    pub fn printer(&mut self) -> &mut Printer {
        &mut self.printer
    }

    /// Reads a recorded file, filters it and prints to `out`. Lines that are no response are
    /// reported on `warn` and skipped; `warn` is best effort.
    pub fn read(
        &mut self,
        reader: &mut FlowReader,
        out: impl Write,
        warn: &mut dyn Write,
    ) -> Result<(), ObserveError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let mut last: Option<VecDeque<GetFlowsResponse>> = self
            .last
            .map(|n| VecDeque::with_capacity(n.min(1_000_000) as usize));
        let mut shown: u64 = 0;
        let mut bad_lines = 0usize;
        let name = reader.name().to_owned();
        while let Some(line) = reader.next_line()? {
            let resp = match line.decoded {
                Ok(r) => r,
                Err(e) => {
                    let _ = writeln!(
                        warn,
                        "{name}:{}: skipping a line that is not a GetFlowsResponse: {e}",
                        line.number
                    );
                    bad_lines += 1;
                    continue;
                }
            };
            let Some(ResponseTypes::Flow(flow)) = &resp.response_types else {
                continue;
            };
            let time = resp.time.or(flow.time);
            if self.since.is_some_and(|s| time.is_none_or(|t| t < s))
                || self.until.is_some_and(|u| time.is_none_or(|t| t > u))
            {
                continue;
            }
            if !self.filters.matches(flow) {
                continue;
            }
            match &mut last {
                Some(ring) => {
                    if ring.len() as u64 == self.last.unwrap_or(0) {
                        ring.pop_front();
                    }
                    if self.last != Some(0) {
                        ring.push_back(resp.clone());
                    }
                }
                None => {
                    self.printer.print(&mut out, resp)?;
                    shown += 1;
                    if self.first.is_some_and(|f| shown >= f) {
                        break;
                    }
                }
            }
        }
        for resp in last.into_iter().flatten() {
            self.printer.print(&mut out, &resp)?;
        }
        self.printer.finish(&mut out)?;
        out.flush()?;
        if bad_lines > 0 {
            let _ = writeln!(warn, "{bad_lines} malformed line(s) skipped");
        }
        Ok(())
    }
}

enum Format {
    Compact,
    Dict,
    Json,
    Table,
}

impl Format {
    fn parse(s: &str) -> Result<Format, ObserveError> {
        Ok(match s {
            "compact" => Format::Compact,
            "dict" => Format::Dict,
            "json" | "jsonpb" | "JSON" => Format::Json,
            "table" | "tab" => Format::Table,
            other => return Err(ObserveError::Format(other.to_owned())),
        })
    }
}

/// Prints responses in one output format; the table is written by [`Printer::finish`].
pub struct Printer {
    format: Format,
    opts: PrintOptions,
    table: Option<Table>,
    first_dict: bool,
    /// One reused buffer for the compact line.
    line: String,
}

impl Printer {
    fn new(format: Format, opts: PrintOptions) -> Printer {
        Printer {
            format,
            opts,
            table: None,
            first_dict: true,
            line: String::new(),
        }
    }

    pub fn print(
        &mut self,
        out: &mut impl Write,
        resp: &GetFlowsResponse,
    ) -> Result<(), ObserveError> {
        match (&self.format, &resp.response_types) {
            (Format::Json, _) => writeln!(out, "{}", printer::json(resp)?)?,
            (Format::Compact, Some(ResponseTypes::Flow(f))) => {
                self.line.clear();
                printer::compact_into(&mut self.line, f, &self.opts);
                out.write_all(self.line.as_bytes())?
            }
            (Format::Compact, Some(ResponseTypes::LostEvents(l))) => {
                out.write_all(printer::lost_events(l, &self.opts).as_bytes())?
            }
            (Format::Dict, Some(ResponseTypes::Flow(f))) => {
                out.write_all(printer::dict(f, &self.opts, self.first_dict).as_bytes())?;
                self.first_dict = false;
            }
            (Format::Table, Some(ResponseTypes::Flow(f))) => self
                .table
                .get_or_insert_with(|| Table::new(&self.opts))
                .push(f, &self.opts),
            _ => {}
        }
        Ok(())
    }

    /// Writes what waits for the end (the table).
    pub fn finish(&mut self, out: &mut impl Write) -> Result<(), ObserveError> {
        if let Some(t) = &self.table {
            out.write_all(t.render().as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/flows/seed.jsonl");

    fn options(output: &str) -> ObserveOptions {
        ObserveOptions {
            output: output.into(),
            ..Default::default()
        }
    }

    fn flags(f: &[(&str, &str)]) -> Vec<(String, String)> {
        f.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn run(opts: &ObserveOptions, filter: &[(&str, &str)]) -> (String, String) {
        let (w, b) = build_filters(&flags(filter)).expect("filters");
        let mut o = Observe::new(opts, w, b, Timestamp::now()).expect("options");
        let mut reader = FlowReader::file(std::path::Path::new(SEED)).expect("seed flows");
        let (mut out, mut warn) = (Vec::new(), Vec::new());
        o.read(&mut reader, &mut out, &mut warn).expect("reads");
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        (text(out), text(warn))
    }

    #[test]
    fn first_last_and_filters() {
        let (all, warn) = run(&options("compact"), &[]);
        assert_eq!(warn, "");
        let lines: Vec<&str> = all.lines().collect();
        assert!(lines.len() > 3);
        let first = ObserveOptions {
            first: Some(2),
            ..options("compact")
        };
        assert_eq!(run(&first, &[]).0.lines().collect::<Vec<_>>(), lines[..2]);
        let last = ObserveOptions {
            last: Some(2),
            ..options("compact")
        };
        assert_eq!(
            run(&last, &[]).0.lines().collect::<Vec<_>>(),
            lines[lines.len() - 2..]
        );
        let none = ObserveOptions {
            last: Some(0),
            ..options("compact")
        };
        assert_eq!(run(&none, &[]).0, "");
        let (dropped, _) = run(&options("compact"), &[("verdict", "DROPPED")]);
        let n = dropped.lines().count();
        assert!(n > 0 && n < lines.len(), "{dropped}");
    }

    #[test]
    fn errors_name_the_flags() {
        let e = build_filters(&flags(&[("to-ip", "x")]))
            .and_then(|(w, b)| {
                Observe::new(&options("compact"), w, b, Timestamp::now()).map(|_| ())
            })
            .expect_err("bad IP");
        assert_eq!(e.to_string(), "invalid IP address in filter: \"x\"");
        let e = build_filters(&flags(&[("not", "")])).expect_err("trailing --not");
        assert_eq!(e.to_string(), "trailing --not found in the arguments");
        let e = Observe::new(&options("yaml"), vec![], vec![], Timestamp::now())
            .map(|_| ())
            .expect_err("bad format");
        assert_eq!(
            e.to_string(),
            "invalid output format \"yaml\": use compact, dict, json, jsonpb or table"
        );
        let follow = ObserveOptions {
            follow: true,
            ..options("table")
        };
        let o = Observe::new(&follow, vec![], vec![], Timestamp::now()).expect("options");
        assert!(matches!(o.request(), Err(ObserveError::TableFollow)));
    }

    #[test]
    fn requests_take_hubble_s_defaults() {
        let number = |opts: ObserveOptions| {
            let o = Observe::new(&opts, vec![], vec![], Timestamp::now()).expect("options");
            o.request().expect("request").number
        };
        assert_eq!(number(options("compact")), 20);
        let all = ObserveOptions {
            all: true,
            ..options("compact")
        };
        assert_eq!(number(all), u64::MAX);
        let follow = ObserveOptions {
            follow: true,
            ..options("compact")
        };
        assert_eq!(number(follow), 0);
        let first = ObserveOptions {
            first: Some(3),
            ..options("compact")
        };
        assert_eq!(number(first), 3);
    }

    #[test]
    fn raw_filters_are_yaml_lists_of_json() {
        let (w, b) = build_filters(&flags(&[
            ("to-port", "80"),
            ("not", ""),
            ("verdict", "DROPPED"),
        ]))
        .expect("filters");
        let mut out = Vec::new();
        write_raw_filters(&mut out, &w, &b).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "allowlist:\n    - '{\"destination_port\":[\"80\"]}'\ndenylist:\n    - '{\"verdict\":[\"DROPPED\"]}'\n"
        );
    }
}
