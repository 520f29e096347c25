//! `observe`'s command-line flags (clap), apart from the flow source and its transport, which
//! the binary adds: the output options and the filter flags. The filter flags come from
//! [`FILTER_FLAGS`], so the command line, the builder and the UI's search take the same names.

use super::ObserveError;
use crate::filterflags::{BuiltFilters, FILTER_FLAGS};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

/// The options of `hubble observe` other than filters and the flow source, as typed.
#[derive(Args, Debug, Clone)]
pub struct ObserveOptions {
    /// Output format: compact, dict, json, jsonpb, table.
    #[arg(short, long, default_value = "compact")]
    pub output: String,
    /// StampMilli, YearMonthDay, YearMonthDayHour, YearMonthDayHourMinute, RFC3339, RFC3339Milli,
    /// RFC3339Micro, RFC3339Nano or RFC1123Z.
    #[arg(long, default_value = "StampMilli")]
    pub time_format: String,
    /// Flows since this time (a duration such as 5m, or an RFC 3339 time).
    #[arg(long)]
    pub since: Option<String>,
    /// Flows until this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Show the first N matching flows.
    #[arg(long, conflicts_with_all = ["last", "all"])]
    pub first: Option<u64>,
    /// Show the last N matching flows.
    #[arg(long, conflicts_with = "all")]
    pub last: Option<u64>,
    /// Show every matching flow.
    #[arg(long)]
    pub all: bool,
    /// Keep streaming new flows (with --server).
    #[arg(short, long, conflicts_with = "first")]
    pub follow: bool,
    #[arg(long)]
    pub print_node_name: bool,
    #[arg(long)]
    pub print_policy_names: bool,
    /// Print IP addresses instead of pod and service names.
    #[arg(long)]
    pub numeric: bool,
    /// Add the container and process that sent each flow, when the flow carries them
    /// (compact: ` container=NAME process=COMM pid=N`; dict and table: CONTAINER and PROCESS).
    #[arg(long)]
    pub print_process: bool,
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
            print_process: false,
        }
    }
}

/// The filter flags ([`FILTER_FLAGS`]), in command-line order: `--not` applies to the next one
/// only.
#[derive(Debug, Default)]
pub struct FilterArgs {
    /// (long name without dashes, value; `""` for switches).
    pub ordered: Vec<(String, String)>,
}

impl FilterArgs {
    /// The lists for a server and what the client applies.
    pub fn build(&self) -> Result<BuiltFilters, ObserveError> {
        super::build_all_filters(&self.ordered)
    }
}

impl Args for FilterArgs {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for f in FILTER_FLAGS.iter().filter(|f| f.observe) {
            let arg = Arg::new(f.long).long(f.long).help_heading("Filters");
            let arg = match f.short {
                Some(s) => arg.short(s),
                None => arg,
            };
            let arg = if f.help.is_empty() {
                arg
            } else {
                arg.help(f.help)
            };
            // A switch appends "" per use: with a counter, clap keeps the position of its last
            // use only, and `--not A --not B` would lose the first `--not`.
            cmd = cmd.arg(if f.takes_value {
                arg.action(ArgAction::Append).num_args(1)
            } else {
                arg.action(ArgAction::Append)
                    .num_args(0)
                    .default_missing_value("")
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
            if m.value_source(f.long) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let indices = m.indices_of(f.long).into_iter().flatten();
            let values = m.get_many::<String>(f.long).into_iter().flatten();
            ordered.extend(
                indices
                    .zip(values)
                    .map(|(i, v)| (i, f.long.to_owned(), v.clone())),
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filterflags::{FilterBuilder, flag_takes_value, long_flag_for_short};
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        options: ObserveOptions,
        #[command(flatten)]
        filters: FilterArgs,
    }

    /// The filter flags clap accepts: (long, short, takes a value).
    fn clap_filter_flags() -> Vec<(String, Option<char>, bool)> {
        Cli::command()
            .get_arguments()
            .filter(|a| a.get_help_heading() == Some("Filters"))
            .map(|a| {
                let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
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
                !matches!(added, Err(crate::filter::FilterError::UnknownFlag { .. })),
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
        Cli::command().debug_assert();
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
            "--container",
            "istio-proxy",
            "--verdict",
            "DROPPED",
            "--not",
            "--process",
            "curl",
            "--to-ip",
            "5.6.7.8",
            "--print-process",
        ])
        .expect("parses");
        let got: Vec<(&str, &str)> = cli
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
                ("container", "istio-proxy"),
                ("verdict", "DROPPED"),
                ("not", ""),
                ("process", "curl"),
                ("to-ip", "5.6.7.8"),
            ]
        );
        assert!(cli.options.print_process);
        let cli = <Cli as clap::Parser>::try_parse_from([
            "observe",
            "--container",
            "istio-proxy",
            "--not",
            "--process",
            "curl",
        ])
        .expect("parses");
        let built = cli.filters.build().expect("builds");
        let (white, black) = built.client.process_filters();
        assert_eq!(white.container, ["istio-proxy"]);
        assert_eq!(black.process, ["curl"]);
    }

    #[test]
    fn defaults_are_hubbles() {
        let cli = <Cli as clap::Parser>::try_parse_from(["observe"]).expect("parses");
        let d = ObserveOptions::default();
        assert_eq!(
            (cli.options.output, cli.options.time_format),
            (d.output, d.time_format)
        );
        assert!(
            <Cli as clap::Parser>::try_parse_from(["observe", "--first", "1", "--last", "1"])
                .is_err()
        );
        assert!(<Cli as clap::Parser>::try_parse_from(["observe", "-f", "--first", "1"]).is_err());
    }
}
