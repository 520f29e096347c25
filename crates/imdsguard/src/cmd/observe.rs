//! `imdsguard observe`: `hubble observe` for imdsguard's flows (and for flows recorded with Hubble).

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use imdsguard_flow::filterflags::FILTER_FLAGS;
use imdsguard_flow::jsonline::FlowReader;
use imdsguard_flow::observe::{self, Observe, ObserveOptions};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_hubble_server::client::{ClientOptions, ClientTls};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Read flows from a file of `hubble observe -o jsonpb` lines (`-` for stdin).
    #[arg(long, value_name = "FILE|-", conflicts_with = "server")]
    input_file: Option<String>,
    /// A Hubble Observer API: the agent (`localhost:4244`, `unix:///path/hubble.sock`) or Relay
    /// (`relay:4245`); `tls://host:port` connects with TLS.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
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

/// The hubble CLI's TLS flags, for `--server` (here and in `imdsguard status`).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect to the server with TLS (a `tls://` server address does too).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM, comma-separated list) to verify the server with; default: the
    /// system's.
    #[arg(long, value_delimiter = ',', value_name = "FILES")]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// A client certificate (PEM), for servers that require one (mTLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the server address's host), e.g.
    /// `node-a.default.hubble-grpc.cilium.io` for an agent, `*.hubble-relay.cilium.io` names
    /// for Relay.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// How to reach `server`: TLS with `--tls` or a `tls://` address; the TLS flags alone
    /// (without either) are refused rather than ignored.
    pub fn client(&self, server: String) -> Result<ClientOptions> {
        let settings = ClientTls {
            ca_cert_files: self.tls_ca_cert_files.clone(),
            client_cert_file: self.tls_client_cert_file.clone(),
            client_key_file: self.tls_client_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        };
        Ok(ClientOptions::from_flags(server, self.tls, settings)?)
    }
}

/// The filter flags (`imdsguard_flow::filterflags::FILTER_FLAGS`), in command-line order:
/// `--not` applies to the next one only.
#[derive(Debug, Default)]
pub struct FilterArgs {
    ordered: Vec<(String, String)>,
}

impl Args for FilterArgs {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for f in FILTER_FLAGS.iter().filter(|f| f.observe) {
            let arg = Arg::new(f.long).long(f.long).help_heading("Filters");
            let arg = match f.short {
                Some(s) => arg.short(s),
                None => arg,
            };
            cmd = cmd.arg(if f.takes_value {
                arg.action(ArgAction::Append).num_args(1)
            } else {
                arg.action(ArgAction::Count)
            });
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
        for f in FILTER_FLAGS.iter().filter(|f| f.observe) {
            // Switches count from 0 by default: only what was typed counts.
            if m.value_source(f.long) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let indices = m.indices_of(f.long).into_iter().flatten();
            if f.takes_value {
                let values = m.get_many::<String>(f.long).into_iter().flatten();
                ordered.extend(
                    indices
                        .zip(values)
                        .map(|(i, v)| (i, f.long.to_owned(), v.clone())),
                );
            } else {
                ordered.extend(indices.map(|i| (i, f.long.to_owned(), String::new())));
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

pub fn run(args: ObserveArgs) -> Result<ExitCode> {
    let (whitelist, blacklist) = observe::build_filters(&args.filters.ordered)?;
    if args.print_raw_filters {
        observe::write_raw_filters(&mut std::io::stdout().lock(), &whitelist, &blacklist)?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = ObserveOptions {
        output: args.output,
        time_format: args.time_format,
        since: args.since,
        until: args.until,
        first: args.first,
        last: args.last,
        all: args.all,
        follow: args.follow,
        print_node_name: args.print_node_name,
        print_policy_names: args.print_policy_names,
        numeric: args.numeric,
    };
    let mut session = Observe::new(&opts, whitelist, blacklist, Timestamp::now())?;
    if let Some(server) = args.server {
        let req = session.request()?;
        let client = args.tls.client(server)?;
        let printer = session.printer();
        super::block_on(client.print_flows(req, printer, &mut std::io::stdout()))??;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(input) = &args.input_file else {
        bail!(
            "no flow source: give --server ADDR (an imdsguard agent or any Hubble server) or --input-file FILE"
        );
    };
    let mut reader = FlowReader::open(input).with_context(|| format!("opening {input}"))?;
    session.read(
        &mut reader,
        std::io::stdout().lock(),
        &mut std::io::stderr(),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use imdsguard_flow::filterflags::{FilterBuilder, flag_takes_value, long_flag_for_short};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        observe: ObserveArgs,
    }

    /// The filter flags clap accepts: (long, short, takes a value).
    fn clap_filter_flags() -> Vec<(String, Option<char>, bool)> {
        Cli::command()
            .get_arguments()
            .filter(|a| a.get_help_heading() == Some("Filters"))
            .map(|a| {
                let takes_value = matches!(a.get_action(), ArgAction::Append);
                let long = a.get_long().unwrap_or_default().to_owned();
                (long, a.get_short(), takes_value)
            })
            .collect()
    }

    #[test]
    fn the_command_line_and_the_filter_builder_agree() {
        let clap = clap_filter_flags();
        let table: Vec<_> = FILTER_FLAGS
            .iter()
            .filter(|f| f.observe)
            .map(|f| (f.long.to_owned(), f.short, f.takes_value))
            .collect();
        assert_eq!(clap, table);
        for (long, short, takes_value) in &clap {
            assert_eq!(flag_takes_value(long), Some(*takes_value), "--{long}");
            if let Some(c) = short {
                assert_eq!(long_flag_for_short(*c), Some(long.as_str()), "-{c}");
            }
            let added = FilterBuilder::new().add(long, "1");
            assert!(
                !matches!(
                    added,
                    Err(imdsguard_flow::filter::FilterError::UnknownFlag { .. })
                ),
                "--{long}"
            );
        }
        // No other option of the command is taken for a filter.
        for a in Cli::command().get_arguments() {
            if a.get_help_heading() != Some("Filters") {
                let long = a.get_long().unwrap_or_default();
                assert_eq!(flag_takes_value(long), None, "--{long}");
            }
        }
    }

    #[test]
    fn tls_flags_are_the_hubble_clis() {
        let parse = |args: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("observe").chain(args.iter().copied()),
            )
            .expect("parses");
            cli.observe.tls.client("relay:4245".into())
        };
        let o = parse(&[
            "--tls",
            "--tls-ca-cert-files",
            "a.crt,b.crt",
            "--tls-client-cert-file",
            "c.crt",
            "--tls-client-key-file",
            "c.key",
            "--tls-server-name",
            "node-a.default.hubble-grpc.cilium.io",
        ])
        .expect("TLS options");
        let tls = o.tls.expect("TLS on");
        assert_eq!(tls.ca_cert_files.len(), 2);
        assert_eq!(
            tls.server_name.as_deref(),
            Some("node-a.default.hubble-grpc.cilium.io")
        );
        assert!(parse(&[]).expect("plaintext").tls.is_none());
        // A TLS flag without --tls would be ignored by a plaintext connection: refused instead.
        assert!(parse(&["--tls-ca-cert-files", "a.crt"]).is_err());
    }

    #[test]
    fn filter_flags_keep_their_order() {
        let cli = <Cli as clap::Parser>::try_parse_from([
            "observe",
            "--to-ip",
            "1.2.3.4",
            "-n",
            "kube-system",
            "--not",
            "-4",
            "--verdict",
            "DROPPED",
            "--to-ip",
            "5.6.7.8",
        ])
        .expect("parses");
        let got: Vec<(&str, &str)> = cli
            .observe
            .filters
            .ordered
            .iter()
            .map(|(f, v)| (f.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("to-ip", "1.2.3.4"),
                ("namespace", "kube-system"),
                ("not", ""),
                ("ipv4", ""),
                ("verdict", "DROPPED"),
                ("to-ip", "5.6.7.8"),
            ]
        );
    }
}
