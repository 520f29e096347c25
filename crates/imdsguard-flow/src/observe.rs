//! `hubble observe` apart from its transport: filter flags into a request's whitelist and
//! blacklist (plus imdsguard's client-side `--container` and `--process`), the output options,
//! the printer, and the loop over a recorded file (`--input-file`) with `--since`, `--until`,
//! `--first` and `--last`. A server's stream is printed by the same [`Printer`] (the gRPC client
//! is `imdsguard_hubble_server::client`). The command line's flags are in [`args`].
//!
//! The error texts are the command line's: they name its flags.

pub mod args;

use crate::filter::{ClientFilter, FilterError, FlowFilters};
use crate::filterflags::{BuiltFilters, FilterBuilder};
use crate::flow::FlowFilter;
use crate::jsonline::{FlowReader, ReadError};
use crate::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes};
use crate::printer::{self, PrintOptions, Table, TimeFormat};
use crate::timespec;
use imdsguard_hubble_proto::wkt::Timestamp;
use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};

pub use args::{FilterArgs, ObserveOptions};

/// How many flows `hubble observe` shows without `--first`, `--last`, `--all`, `--follow` or
/// `--since`: the last 20.
const DEFAULT_LAST: u64 = 20;

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
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The whitelist and blacklist of filter flags given in command-line order (long names without
/// dashes, `""` for switches): `--not` applies to the next flag only. Fails on `--container` and
/// `--process`, which no list holds: [`build_all_filters`] takes them.
pub fn build_filters(
    flags: &[(String, String)],
) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), ObserveError> {
    builder(flags)?.build().map_err(ObserveError::Filters)
}

/// The lists for a server and the client-side filters of flags given in command-line order.
pub fn build_all_filters(flags: &[(String, String)]) -> Result<BuiltFilters, ObserveError> {
    builder(flags)?
        .build_with_client()
        .map_err(ObserveError::Filters)
}

fn builder(flags: &[(String, String)]) -> Result<FilterBuilder, ObserveError> {
    let mut builder = FilterBuilder::new();
    for (flag, value) in flags {
        builder
            .add(flag, value)
            .map_err(|error| ObserveError::Flag {
                flag: flag.clone(),
                error,
            })?;
    }
    Ok(builder)
}

/// `--print-raw-filters`: the lists as Hubble prints them, YAML lists of `FlowFilter` JSON, then
/// (only when there are some) the criteria the client applies, as JSON objects.
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

/// [`write_raw_filters`] for all the filters of a command line: the client's part follows as
/// `client-allowlist` and `client-denylist`, each `{"container":[…],"process":[…]}` (a key
/// only when it has values). A denylist
/// with process criteria is the client's whole (see [`ClientFilter`]).
pub fn write_all_raw_filters(
    out: &mut impl Write,
    filters: &BuiltFilters,
) -> Result<(), ObserveError> {
    write_raw_filters(out, &filters.whitelist, &filters.blacklist)?;
    let (white, black) = filters.client.process_filters();
    for (name, p) in [("client-allowlist", white), ("client-denylist", black)] {
        if !p.is_empty() {
            let mut doc = serde_json::Map::new();
            for (key, values) in [("container", &p.container), ("process", &p.process)] {
                if !values.is_empty() {
                    doc.insert(key.into(), values.clone().into());
                }
            }
            let doc = serde_json::Value::Object(doc);
            writeln!(out, "{name}:\n    - '{doc}'")?;
        }
    }
    Ok(())
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
        let filters = BuiltFilters {
            whitelist,
            blacklist,
            client: ClientFilter::default(),
        };
        Observe::with_filters(opts, filters, now)
    }

    /// [`Observe::new`] with client-side filters too (`--container`, `--process`).
    pub fn with_filters(
        opts: &ObserveOptions,
        built: BuiltFilters,
        now: Timestamp,
    ) -> Result<Observe, ObserveError> {
        let filters =
            FlowFilters::new(&built.whitelist, &built.blacklist).map_err(ObserveError::Filters)?;
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
            process: opts.print_process,
        };
        let mut printer = Printer::new(format, print);
        printer.window.client = built.client;
        Ok(Observe {
            whitelist: built.whitelist,
            blacklist: built.blacklist,
            filters,
            since,
            until,
            first: opts.first,
            last: opts.last,
            all: opts.all,
            follow: opts.follow,
            printer,
        })
    }

    /// The request for a server, with Hubble's defaults: 20 flows unless `--first`, `--last`,
    /// `--all`, `--follow` or `--since` say otherwise. With client-side filters (and without
    /// `--follow`) it asks for every flow, and the printer counts `--first` and `--last` among
    /// those the client keeps.
    pub fn request(&self) -> Result<GetFlowsRequest, ObserveError> {
        if self.follow && matches!(self.printer.format, Format::Table) {
            return Err(ObserveError::TableFollow);
        }
        let number = match (self.first, self.last, self.all) {
            _ if self.counts_on_client() => u64::MAX,
            (Some(n), _, _) | (_, Some(n), _) => n,
            (_, _, true) => u64::MAX,
            _ if self.follow || self.since.is_some() => 0,
            _ => DEFAULT_LAST,
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

    /// Whether `--first`/`--last` (or the default last 20) must be counted by the client: it
    /// drops flows the server counted. Not with `--follow`, whose stream has no end to count
    /// back from: there the server's N come before the client's filters.
    fn counts_on_client(&self) -> bool {
        !self.printer.window.client.is_empty() && !self.follow
    }

    /// Prints what a server sends (see [`Observe::request`]), applying the client-side filters.
    pub fn printer(&mut self) -> &mut Printer {
        if self.counts_on_client() {
            let default_last =
                (self.first.is_none() && !self.all && self.since.is_none()).then_some(DEFAULT_LAST);
            self.printer
                .window
                .count(self.first, self.last.or(default_last));
        }
        &mut self.printer
    }

    /// Reads `input` (a file, or `-` for stdin): see [`Observe::read`].
    pub fn read_input(
        &mut self,
        input: &str,
        out: impl Write,
        warn: &mut dyn Write,
    ) -> Result<(), ObserveError> {
        let mut reader = FlowReader::open(input).map_err(|source| ObserveError::Open {
            path: input.to_owned(),
            source,
        })?;
        self.read(&mut reader, out, warn)
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
        self.printer.window.count(self.first, self.last);
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
            self.printer.print(&mut out, resp)?;
            if self.printer.done() {
                break;
            }
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

/// Which of the flows that reach the printer it shows: those the client-side filters keep, and
/// of those the first N or the last N when the printer counts them.
#[derive(Default)]
struct Window {
    client: ClientFilter,
    first: Option<u64>,
    /// With `--last N`: the last N so far, printed at the end.
    last: Option<(u64, VecDeque<GetFlowsResponse>)>,
    shown: u64,
}

impl Window {
    fn count(&mut self, first: Option<u64>, last: Option<u64>) {
        self.first = first;
        self.last = last.map(|n| (n, VecDeque::with_capacity(n.min(1_000_000) as usize)));
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
    window: Window,
}

impl Printer {
    fn new(format: Format, opts: PrintOptions) -> Printer {
        Printer {
            format,
            opts,
            table: None,
            first_dict: true,
            line: String::new(),
            window: Window::default(),
        }
    }

    /// Prints a response, or keeps it for the end (`--last`), or drops it (a client-side filter,
    /// or `--first` reached).
    pub fn print(
        &mut self,
        out: &mut impl Write,
        resp: &GetFlowsResponse,
    ) -> Result<(), ObserveError> {
        if let Some(ResponseTypes::Flow(f)) = &resp.response_types {
            let w = &mut self.window;
            if !w.client.matches(f) || w.first.is_some_and(|n| w.shown >= n) {
                return Ok(());
            }
            if let Some((n, ring)) = &mut w.last {
                if *n > 0 {
                    if ring.len() as u64 == *n {
                        ring.pop_front();
                    }
                    ring.push_back(resp.clone());
                }
                return Ok(());
            }
            w.shown += 1;
        }
        self.write(out, resp)
    }

    /// Whether `--first` is reached: a caller may stop reading.
    pub fn done(&self) -> bool {
        self.window.first.is_some_and(|n| self.window.shown >= n)
    }

    fn write(&mut self, out: &mut impl Write, resp: &GetFlowsResponse) -> Result<(), ObserveError> {
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

    /// Writes what waits for the end (`--last`, the table).
    pub fn finish(&mut self, out: &mut impl Write) -> Result<(), ObserveError> {
        if let Some((_, ring)) = self.window.last.take() {
            for resp in ring {
                self.write(out, &resp)?;
            }
        }
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

    /// The seed's flows, written by our JSON writer, with processes: the first none, then
    /// `istio-proxy/envoy` and `app/curl` in turn.
    fn attributed() -> String {
        use imdsguard_hubble_proto::process::{ProcessInfo, set};
        let text = std::fs::read_to_string(SEED).expect("seed");
        let mut d = crate::jsonline::LineDecoder::new();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let mut resp = d.decode(line).expect("seed line").clone();
            if let Some(ResponseTypes::Flow(f)) = &mut resp.response_types
                && i > 0
            {
                let (container, process) = if i % 2 == 1 {
                    ("istio-proxy", "envoy")
                } else {
                    ("app", "curl")
                };
                let p = ProcessInfo {
                    container: container.into(),
                    process: process.into(),
                    pid: 100 + i as u32,
                    uid: Some(1337),
                };
                set(f, &p);
            }
            out.push_str(&printer::json(&resp).expect("json"));
            out.push('\n');
        }
        out
    }

    fn run_on(text: &str, opts: &ObserveOptions, filter: &[(&str, &str)]) -> String {
        let built = build_all_filters(&flags(filter)).expect("filters");
        let mut o = Observe::with_filters(opts, built, Timestamp::now()).expect("options");
        let input = io::Cursor::new(text.as_bytes().to_vec());
        let mut reader = FlowReader::new("mem", Box::new(input), None);
        let (mut out, mut warn) = (Vec::new(), Vec::new());
        o.read(&mut reader, &mut out, &mut warn).expect("reads");
        assert_eq!(warn, b"");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn extensions_leave_every_format_as_hubble_prints_it() {
        let text = attributed();
        assert!(text.contains(r#""extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":101,"process":"envoy","uid":1337}}"#));
        for output in ["compact", "dict", "table"] {
            assert_eq!(
                run_on(&text, &options(output), &[]),
                run(&options(output), &[]).0,
                "{output}"
            );
        }
        // JSON reads back to the same lines.
        assert_eq!(run_on(&text, &options("json"), &[]), text);
    }

    #[test]
    fn print_process_and_process_filters() {
        let text = attributed();
        let opts = ObserveOptions {
            print_process: true,
            ..options("compact")
        };
        let all = run_on(&text, &opts, &[]);
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 12);
        assert!(!lines[0].contains("container="), "{}", lines[0]);
        assert!(
            lines[1].ends_with(") container=istio-proxy process=envoy pid=101"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(") container=app process=curl pid=102"),
            "{}",
            lines[2]
        );

        let sidecar = run_on(&text, &opts, &[("container", "istio-proxy")]);
        assert_eq!(sidecar.lines().count(), 6, "{sidecar}");
        assert!(sidecar.lines().all(|l| l.contains("container=istio-proxy")));
        // Repeated: OR; two flags: AND; --not: the rest.
        let either = run_on(
            &text,
            &opts,
            &[("container", "istio-proxy"), ("container", "app")],
        );
        assert_eq!(either.lines().count(), 11);
        let none = run_on(
            &text,
            &opts,
            &[("container", "istio-proxy"), ("process", "curl")],
        );
        assert_eq!(none, "");
        let not = run_on(&text, &opts, &[("not", ""), ("process", "envoy")]);
        assert_eq!(not.lines().count(), 6);
        assert!(!not.contains("process=envoy"));
        // With a server-side flag in the same list: AND.
        let dropped = run_on(&text, &opts, &[("verdict", "DROPPED"), ("process", "curl")]);
        assert_eq!(dropped.lines().count(), 1, "{dropped}");
        assert!(dropped.contains("process=curl"), "{dropped}");

        // --first and --last count the flows the client keeps.
        let last = ObserveOptions {
            last: Some(2),
            ..opts.clone()
        };
        let got = run_on(&text, &last, &[("container", "app")]);
        let app_text = run_on(&text, &opts, &[("container", "app")]);
        let app: Vec<&str> = app_text.lines().collect();
        assert_eq!(app.len(), 5);
        assert_eq!(got.lines().collect::<Vec<_>>(), app[app.len() - 2..]);
        let first = ObserveOptions {
            first: Some(2),
            ..opts.clone()
        };
        let got = run_on(&text, &first, &[("container", "app")]);
        assert_eq!(got.lines().collect::<Vec<_>>(), app[..2]);
    }

    #[test]
    fn a_server_is_asked_for_more_when_the_client_filters() {
        let built = build_all_filters(&flags(&[
            ("to-port", "80"),
            ("not", ""),
            ("container", "app"),
        ]))
        .expect("filters");
        let o = Observe::with_filters(&options("compact"), built.clone(), Timestamp::now())
            .expect("options");
        let req = o.request().expect("request");
        assert_eq!(req.number, u64::MAX);
        assert_eq!(req.whitelist.len(), 1);
        assert!(req.blacklist.is_empty(), "the client applies the blacklist");
        let follow = ObserveOptions {
            follow: true,
            last: Some(5),
            ..options("compact")
        };
        let o = Observe::with_filters(&follow, built, Timestamp::now()).expect("options");
        assert_eq!(o.request().expect("request").number, 5);
        // The printer drops what the client filters out, and counts the default last 20.
        let built = build_all_filters(&flags(&[("process", "curl")])).expect("filters");
        let mut o =
            Observe::with_filters(&options("compact"), built, Timestamp::now()).expect("options");
        let text = attributed();
        let mut d = crate::jsonline::LineDecoder::new();
        let mut out = Vec::new();
        let printer = o.printer();
        for _ in 0..5 {
            for line in text.lines() {
                printer
                    .print(&mut out, d.decode(line).expect("line"))
                    .expect("prints");
            }
        }
        assert!(out.is_empty(), "--last waits for the end");
        printer.finish(&mut out).expect("finishes");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(out.lines().count(), 20);
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
        let built = build_all_filters(&flags(&[
            ("to-port", "80"),
            ("container", "app"),
            ("not", ""),
            ("process", "curl"),
        ]))
        .expect("filters");
        let mut out = Vec::new();
        write_all_raw_filters(&mut out, &built).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "allowlist:\n    - '{\"destination_port\":[\"80\"]}'\ndenylist:\nclient-allowlist:\n    - '{\"container\":[\"app\"]}'\nclient-denylist:\n    - '{\"process\":[\"curl\"]}'\n"
        );
        assert!(matches!(
            build_filters(&flags(&[("process", "curl")])),
            Err(ObserveError::Filters(FilterError::ClientSideFlag {
                flag: "process"
            }))
        ));
    }
}
