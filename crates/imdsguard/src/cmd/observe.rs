//! `imdsguard observe`: `hubble observe` for imdsguard's flows (and for flows recorded with Hubble).

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use imdsguard_flow::filter::FlowFilters;
use imdsguard_flow::filterflags::FilterBuilder;
use imdsguard_flow::flow::FlowFilter;
use imdsguard_flow::jsonline::LineDecoder;
use imdsguard_flow::observer::observer_client::ObserverClient;
use imdsguard_flow::observer::{
    GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
};
use imdsguard_flow::printer::{self, PrintOptions, Table, TimeFormat};
use imdsguard_flow::timespec;
use imdsguard_hubble_proto::wkt::Timestamp;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Read flows from a file of `hubble observe -o jsonpb` lines (`-` for stdin).
    #[arg(long, value_name = "FILE|-", conflicts_with = "server")]
    input_file: Option<String>,
    /// A Hubble Observer API: the agent (`localhost:4244`, `unix:///path/hubble.sock`) or Relay.
    #[arg(long)]
    server: Option<String>,
    /// Keep streaming new flows (with --server).
    #[arg(short, long, conflicts_with = "first")]
    follow: bool,
    /// Output format: compact, dict, json, jsonpb, table.
    #[arg(short, long, default_value = "compact")]
    output: String,
    /// Show the first N matching flows.
    #[arg(long, conflicts_with_all = ["last", "all"])]
    first: Option<u64>,
    /// Show the last N matching flows.
    #[arg(long, conflicts_with = "all")]
    last: Option<u64>,
    /// Show every matching flow.
    #[arg(long)]
    all: bool,
    /// Flows since this time (a duration such as 5m, or an RFC 3339 time).
    #[arg(long)]
    since: Option<String>,
    /// Flows until this time.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    print_node_name: bool,
    #[arg(long)]
    print_policy_names: bool,
    /// Print the FlowFilters as JSON and exit.
    #[arg(long)]
    print_raw_filters: bool,
    /// Print IP addresses instead of pod and service names.
    #[arg(long)]
    numeric: bool,
    /// StampMilli, YearMonthDay, YearMonthDayHour, YearMonthDayHourMinute, RFC3339, RFC3339Milli,
    /// RFC3339Micro, RFC3339Nano or RFC1123Z.
    #[arg(long, default_value = "StampMilli")]
    time_format: String,
    #[command(flatten)]
    filters: FilterArgs,
}

/// The filter flags, in command-line order: `--not` applies to the next one only.
#[derive(Debug, Default)]
pub struct FilterArgs {
    ordered: Vec<(String, String)>,
}

/// (long name, short name, takes a value)
const FILTER_FLAGS: &[(&str, Option<char>, bool)] = &[
    ("not", None, false),
    ("uuid", None, true),
    ("node-name", None, true),
    ("node-label", None, true),
    ("from-cluster", None, true),
    ("cluster", None, true),
    ("to-cluster", None, true),
    ("protocol", None, true),
    ("tcp-flags", None, true),
    ("type", Some('t'), true),
    ("verdict", None, true),
    ("drop-reason-desc", None, true),
    ("http-status", None, true),
    ("http-method", None, true),
    ("http-path", None, true),
    ("http-url", None, true),
    ("http-header", None, true),
    ("trace-id", None, true),
    ("ip-trace-id", None, true),
    ("from-fqdn", None, true),
    ("fqdn", None, true),
    ("to-fqdn", None, true),
    ("from-ip", None, true),
    ("snat-ip", None, true),
    ("ip", None, true),
    ("to-ip", None, true),
    ("ipv4", Some('4'), false),
    ("ipv6", Some('6'), false),
    ("ip-version", None, true),
    ("from-pod", None, true),
    ("pod", None, true),
    ("to-pod", None, true),
    ("from-namespace", None, true),
    ("namespace", Some('n'), true),
    ("to-namespace", None, true),
    ("from-all-namespaces", None, false),
    ("all-namespaces", Some('A'), false),
    ("to-all-namespaces", None, false),
    ("from-label", None, true),
    ("label", Some('l'), true),
    ("to-label", None, true),
    ("from-service", None, true),
    ("service", None, true),
    ("to-service", None, true),
    ("from-port", None, true),
    ("port", None, true),
    ("to-port", None, true),
    ("from-workload", None, true),
    ("workload", None, true),
    ("to-workload", None, true),
    ("from-identity", None, true),
    ("identity", None, true),
    ("to-identity", None, true),
    ("traffic-direction", None, true),
    ("interface", None, true),
    ("encrypted", None, false),
    ("unencrypted", None, false),
];

impl Args for FilterArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd;
        for (long, short, value) in FILTER_FLAGS {
            let mut arg = Arg::new(*long).long(*long).help_heading("Filters");
            if let Some(s) = short {
                arg = arg.short(*s);
            }
            arg = if *value {
                arg.action(ArgAction::Append).num_args(1)
            } else {
                arg.action(ArgAction::Count)
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for FilterArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut ordered: Vec<(usize, String, String)> = Vec::new();
        for (long, _, value) in FILTER_FLAGS {
            // Switches count from 0 by default: only what was typed counts.
            if m.value_source(long) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let Some(indices) = m.indices_of(long) else {
                continue;
            };
            if *value {
                let values = m.get_many::<String>(long).into_iter().flatten();
                for (i, v) in indices.zip(values) {
                    ordered.push((i, (*long).to_owned(), v.clone()));
                }
            } else {
                for i in indices {
                    ordered.push((i, (*long).to_owned(), String::new()));
                }
            }
        }
        ordered.sort_by_key(|(i, _, _)| *i);
        Ok(FilterArgs {
            ordered: ordered.into_iter().map(|(_, f, v)| (f, v)).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

enum Format {
    Compact,
    Dict,
    Json,
    Table,
}

pub fn run(args: ObserveArgs) -> Result<ExitCode> {
    let mut builder = FilterBuilder::new();
    for (flag, value) in &args.filters.ordered {
        builder
            .add(flag, value)
            .map_err(|e| anyhow::anyhow!("invalid filter --{flag}: {e}"))?;
    }
    let (whitelist, blacklist) = builder.build().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.print_raw_filters {
        print_raw_filters(&whitelist, &blacklist)?;
        return Ok(ExitCode::SUCCESS);
    }
    let filters = FlowFilters::new(&whitelist, &blacklist).map_err(|e| anyhow::anyhow!("{e}"))?;
    let format = match args.output.as_str() {
        "compact" => Format::Compact,
        "dict" => Format::Dict,
        "json" | "jsonpb" | "JSON" => Format::Json,
        "table" | "tab" => Format::Table,
        other => bail!("invalid output format {other:?}: use compact, dict, json, jsonpb or table"),
    };
    let time_format = TimeFormat::parse(&args.time_format)
        .with_context(|| format!("unknown --time-format {:?}", args.time_format))?;
    let opts = PrintOptions {
        node_name: args.print_node_name,
        policy_names: args.print_policy_names,
        numeric: args.numeric,
        time_format,
    };
    let now = Timestamp::now();
    let since = args
        .since
        .as_deref()
        .map(|s| timespec::parse(s, now).with_context(|| format!("invalid --since {s:?}")))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| timespec::parse(s, now).with_context(|| format!("invalid --until {s:?}")))
        .transpose()?;
    let mut printer = Printer {
        format,
        opts,
        table: None,
        first_dict: true,
        line: String::new(),
    };
    if let Some(server) = &args.server {
        if args.follow && matches!(printer.format, Format::Table) {
            bail!("the table output format cannot be used with --follow");
        }
        let number = match (args.first, args.last, args.all) {
            (Some(n), _, _) | (_, Some(n), _) => n,
            (_, _, true) => u64::MAX,
            _ if args.follow || since.is_some() => 0,
            _ => 20,
        };
        let req = GetFlowsRequest {
            number,
            first: args.first.is_some(),
            follow: args.follow,
            whitelist,
            blacklist,
            since,
            until: if args.follow { None } else { until },
            ..Default::default()
        };
        return super::block_on(remote(server, req, &mut printer))?;
    }
    let Some(input) = &args.input_file else {
        bail!(
            "no flow source: give --server ADDR (an imdsguard agent or any Hubble server) or --input-file FILE"
        );
    };
    let mut reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {input}"))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut last: Option<VecDeque<GetFlowsResponse>> = args
        .last
        .map(|n| VecDeque::with_capacity(n.min(1_000_000) as usize));
    let mut shown: u64 = 0;
    let mut bad_lines = 0usize;
    let mut decoder = LineDecoder::new();
    let mut line = String::new();
    let mut n = 0usize;
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .with_context(|| format!("reading {input}"))?
            == 0
        {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match decoder.decode(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{input}:{n}: skipping a line that is not a GetFlowsResponse: {e}");
                bad_lines += 1;
                continue;
            }
        };
        let Some(ResponseTypes::Flow(flow)) = &resp.response_types else {
            continue;
        };
        let time = resp.time.or(flow.time);
        if since.is_some_and(|s| time.is_none_or(|t| t < s))
            || until.is_some_and(|u| time.is_none_or(|t| t > u))
        {
            continue;
        }
        if !filters.matches(flow) {
            continue;
        }
        match &mut last {
            Some(ring) => {
                if ring.len() as u64 == args.last.unwrap_or(0) {
                    ring.pop_front();
                }
                if args.last != Some(0) {
                    ring.push_back(resp.clone());
                }
            }
            None => {
                printer.print(&mut out, resp)?;
                shown += 1;
                if args.first.is_some_and(|f| shown >= f) {
                    break;
                }
            }
        }
    }
    for resp in last.into_iter().flatten() {
        printer.print(&mut out, &resp)?;
    }
    printer.finish(&mut out)?;
    out.flush()?;
    if bad_lines > 0 {
        eprintln!("{bad_lines} malformed line(s) skipped");
    }
    Ok(ExitCode::SUCCESS)
}

struct Printer {
    format: Format,
    opts: PrintOptions,
    table: Option<Table>,
    first_dict: bool,
    /// One reused buffer for the compact line.
    line: String,
}

impl Printer {
    fn print(&mut self, out: &mut impl Write, resp: &GetFlowsResponse) -> Result<()> {
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

    fn finish(&mut self, out: &mut impl Write) -> Result<()> {
        if let Some(t) = &self.table {
            out.write_all(t.render().as_bytes())?;
        }
        Ok(())
    }
}

fn print_raw_filters(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<()> {
    // Hubble prints YAML lists of FlowFilter JSON strings.
    println!("allowlist:");
    for f in whitelist {
        println!("    - '{}'", serde_json::to_string(f)?);
    }
    println!("denylist:");
    for f in blacklist {
        println!("    - '{}'", serde_json::to_string(f)?);
    }
    Ok(())
}

/// Connects to a Hubble server: `host:port`, `http://host:port` or `unix:///path`.
pub async fn connect(server: &str) -> Result<tonic::transport::Channel> {
    if let Some(path) = server.strip_prefix("unix://") {
        let path = path.to_owned();
        let endpoint = tonic::transport::Endpoint::try_from("http://[::]:50051")?;
        let connector = tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        });
        return endpoint
            .connect_with_connector(connector)
            .await
            .with_context(|| format!("connecting to {server}"));
    }
    let uri = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    tonic::transport::Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| {
            format!("connecting to {server} (is the agent running with --hubble-listen-address?)")
        })
}

async fn remote(server: &str, req: GetFlowsRequest, printer: &mut Printer) -> Result<ExitCode> {
    let channel = connect(server).await?;
    let mut client = ObserverClient::new(channel);
    let mut stream = client
        .get_flows(req)
        .await
        .map_err(|s| anyhow::anyhow!("GetFlows: {}", s.message()))?
        .into_inner();
    let stdout = std::io::stdout();
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                let mut out = stdout.lock();
                printer.print(&mut out, &resp)?;
                // Followers want each flow as it comes.
                out.flush()?;
            }
            Ok(None) => break,
            Err(s) => bail!("GetFlows stream: {}", s.message()),
        }
    }
    let mut out = stdout.lock();
    printer.finish(&mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
