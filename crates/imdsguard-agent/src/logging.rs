//! The agent's log: `tracing` records written to stderr one line each, as text for people or as
//! JSON for log pipelines (Fluent Bit, Loki, Vector). The library crates log through `tracing`
//! too; without a subscriber (every command but the agent) their records go nowhere.
//!
//! - text: `2026-05-04T10:11:12.345678Z INFO datapath: attached to veth1 interface=veth1`
//! - json: `{"time":"2026-05-04T10:11:12.345678Z","level":"info","msg":"datapath: attached to
//!   veth1","target":"imdsguard::cmd::enforce","interface":"veth1"}`

use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    // `<time> <LEVEL> <message> key=value ...`
    #[default]
    Text,
    // One JSON object per line: `time`, `level`, `msg`, `target` and the record's fields.
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The agent's logging flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// How log records are written to stderr: `text` (`<time> <LEVEL> <message> key=value ...`)
    /// or `json` (one object per line with `time`, `level`, `msg`, `target` and the record's
    /// fields, such as `pod`, `namespace`, `policy`, `interface`, `identity`, `error`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The least severe records written: error, warn, info, debug or trace [default: info]. It
    /// applies to imdsguard's own records; the libraries it uses (kube, hyper, tonic) log from
    /// warn up. Given, it wins over RUST_LOG; not given, RUST_LOG (EnvFilter directives such as
    /// `info,imdsguard_k8s=debug,kube=debug`) is used when set.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
}

/// The filter the flags and `RUST_LOG` (`rust_log`) make, and what was wrong with `RUST_LOG`.
fn filter(level: Option<LogLevel>, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let from_level = |level: LogLevel| {
        // Other crates' debug records (h2, hyper, kube) would drown the agent's own.
        let others = if level == LogLevel::Error {
            "error"
        } else {
            "warn"
        };
        // A target directive matches every target it begins: imdsguard_k8s, imdsguard_proxy, …
        EnvFilter::new(format!("{others},imdsguard={}", level.as_str()))
    };
    match (level, rust_log.map(str::trim).filter(|s| !s.is_empty())) {
        (Some(level), _) => (from_level(level), None),
        (None, Some(directives)) => match EnvFilter::try_new(directives) {
            Ok(f) => (f, None),
            Err(e) => (
                from_level(LogLevel::Info),
                Some(format!("RUST_LOG={directives:?}: {e}")),
            ),
        },
        (None, None) => (from_level(LogLevel::Info), None),
    }
}

/// Sends the process's `tracing` records to stderr as `args` says. Call once, before anything
/// logs; a second call changes nothing.
pub fn init(args: &LogArgs) {
    let (filter, problem) = filter(args.log_level, std::env::var("RUST_LOG").ok().as_deref());
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(LineLayer::stderr(args.log_format));
    if tracing::subscriber::set_global_default(subscriber).is_ok()
        && let Some(problem) = problem
    {
        tracing::warn!(
            error = %problem,
            "RUST_LOG is not a valid filter; logging at info"
        );
    }
}

/// Where a layer's lines go.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Writes each record as one line.
pub struct LineLayer {
    format: LogFormat,
    write: Sink,
}

impl LineLayer {
    pub fn stderr(format: LogFormat) -> LineLayer {
        LineLayer::new(format, |line| {
            // One write per record, under the lock: lines from threads never interleave.
            let _ = std::io::stderr().lock().write_all(line);
        })
    }

    pub fn new(format: LogFormat, write: impl Fn(&[u8]) + Send + Sync + 'static) -> LineLayer {
        LineLayer {
            format,
            write: Box::new(write),
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut record = Record::default();
        event.record(&mut record);
        let meta = event.metadata();
        let line = render(
            self.format,
            &now_rfc3339(),
            *meta.level(),
            meta.target(),
            &record,
        );
        (self.write)(line.as_bytes());
    }
}

/// A field's value as the record carried it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// One record's message and fields, in the order given.
#[derive(Debug, Default)]
struct Record {
    msg: String,
    fields: Vec<(&'static str, Value)>,
}

impl Record {
    fn add(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::Str(s)) => self.msg = s,
            (name, value) => self.fields.push((name, value)),
        }
    }
}

impl Visit for Record {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields and the message's format_args! print their Display here.
        self.add(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, Value::Str(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.add(field, Value::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, Value::Bool(value));
    }
}

/// Now in RFC 3339, UTC, with microseconds.
fn now_rfc3339() -> String {
    rfc3339(imdsguard_hubble_proto::wkt::Timestamp::now())
}

fn rfc3339(t: imdsguard_hubble_proto::wkt::Timestamp) -> String {
    let c = t.civil();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanos / 1000
    )
}

/// The keys a JSON line always has; a record's field of the same name is written as `field_<name>`.
const RESERVED: [&str; 4] = ["time", "level", "msg", "target"];

/// One record as a line, newline included.
fn render(format: LogFormat, time: &str, level: Level, target: &str, record: &Record) -> String {
    let mut out = String::with_capacity(96 + record.msg.len());
    match format {
        LogFormat::Text => {
            let _ = write!(out, "{time} {level} ");
            // One line per record whatever the message holds.
            for c in record.msg.chars() {
                match c {
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() && c != '\t' => {
                        let _ = write!(out, "{}", c.escape_default());
                    }
                    c => out.push(c),
                }
            }
            for (name, value) in &record.fields {
                let _ = write!(out, " {name}=");
                match value {
                    Value::Str(s) => logfmt_value(&mut out, s),
                    Value::I64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::U64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::F64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::Bool(b) => {
                        let _ = write!(out, "{b}");
                    }
                }
            }
        }
        LogFormat::Json => {
            let level = match level {
                Level::ERROR => "error",
                Level::WARN => "warn",
                Level::INFO => "info",
                Level::DEBUG => "debug",
                Level::TRACE => "trace",
            };
            out.push_str("{\"time\":");
            json_str(&mut out, time);
            let _ = write!(out, ",\"level\":\"{level}\",\"msg\":");
            json_str(&mut out, &record.msg);
            out.push_str(",\"target\":");
            json_str(&mut out, target);
            for (name, value) in &record.fields {
                out.push(',');
                if RESERVED.contains(name) {
                    json_str(&mut out, &format!("field_{name}"));
                } else {
                    json_str(&mut out, name);
                }
                out.push(':');
                match value {
                    Value::Str(s) => json_str(&mut out, s),
                    Value::I64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::U64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::F64(n) => match serde_json::Number::from_f64(*n) {
                        Some(n) => {
                            let _ = write!(out, "{n}");
                        }
                        // NaN and the infinities have no JSON number.
                        None => json_str(&mut out, &n.to_string()),
                    },
                    Value::Bool(b) => {
                        let _ = write!(out, "{b}");
                    }
                }
            }
            out.push('}');
        }
    }
    out.push('\n');
    out
}

/// A logfmt value: bare when it can be, else quoted with Rust's (Go-like) escapes.
fn logfmt_value(out: &mut String, s: &str) {
    let bare = !s.is_empty()
        && !s
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        out.push_str(s);
    } else {
        let _ = write!(out, "{s:?}");
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// `Kind namespace/name` or `Kind name` (how policy errors and kept policies name an object) as
/// the fields of a log record: kind, namespace (none for cluster-wide objects) and name.
pub fn object_ref(object: &str) -> (Option<&str>, Option<&str>, &str) {
    let (kind, rest) = match object.split_once(' ') {
        Some((k, r)) => (Some(k), r),
        None => (None, object),
    };
    match rest.split_once('/') {
        Some((ns, name)) => (kind, Some(ns), name),
        None => (kind, None, rest),
    }
}

/// An error and its causes on one line, `outer: inner: root`, as anyhow's `{:#}` prints them.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines `f` logs at `level` and up, in `format`.
    fn capture(format: LogFormat, level: LogLevel, f: impl FnOnce()) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let layer = LineLayer::new(format, move |line| {
            sink.lock().unwrap().extend_from_slice(line);
        });
        let subscriber = tracing_subscriber::registry()
            .with(filter(Some(level), None).0)
            .with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_have_time_level_msg_and_the_fields_at_the_top() {
        let lines = capture(LogFormat::Json, LogLevel::Info, || {
            let e = std::io::Error::other("no such device");
            tracing::info!(interface = "veth1", "datapath: attached to {}", "veth1");
            tracing::warn!(
                pod = "webapp",
                namespace = "apps",
                identity = 14226u32,
                ready = false,
                error = %e,
                msg = "a field named msg",
                "policy error:\nsecond line \"quoted\""
            );
            tracing::debug!("not written at info");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["level"], "info");
        assert_eq!(first["msg"], "datapath: attached to veth1");
        assert_eq!(first["interface"], "veth1");
        assert!(first["target"].as_str().unwrap().starts_with("imdsguard"));
        let time = first["time"].as_str().unwrap();
        assert!(
            imdsguard_hubble_proto::wkt::Timestamp::parse_rfc3339(time).is_some(),
            "{time}"
        );
        assert!(time.ends_with('Z') && time.len() == 27, "{time}");
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["level"], "warn");
        assert_eq!(second["msg"], "policy error:\nsecond line \"quoted\"");
        assert_eq!(second["pod"], "webapp");
        assert_eq!(second["namespace"], "apps");
        assert_eq!(second["identity"], 14226);
        assert_eq!(second["ready"], false);
        assert_eq!(second["error"], "no such device");
        assert_eq!(second["field_msg"], "a field named msg");
        // The keys come in a fixed order: time, level, msg first.
        assert!(lines[1].starts_with("{\"time\":\""), "{}", lines[1]);
        let level = lines[1].find("\"level\"").unwrap();
        let msg = lines[1].find("\"msg\"").unwrap();
        assert!(level < msg, "{}", lines[1]);
    }

    #[test]
    fn text_lines_are_time_level_message_and_logfmt_fields() {
        let lines = capture(LogFormat::Text, LogLevel::Debug, || {
            tracing::debug!(interface = "veth1", "datapath: attached to veth1");
            tracing::error!(
                error = "listening on [::1]:15001: address in use",
                empty = "",
                n = 3,
                "proxy: not listening\nnext"
            );
            tracing::trace!("not written at debug");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert!(
            imdsguard_hubble_proto::wkt::Timestamp::parse_rfc3339(time).is_some(),
            "{time}"
        );
        assert_eq!(rest, "DEBUG datapath: attached to veth1 interface=veth1");
        let (_, rest) = lines[1].split_once(' ').unwrap();
        assert_eq!(
            rest,
            r#"ERROR proxy: not listening\nnext error="listening on [::1]:15001: address in use" empty="" n=3"#
        );
    }

    #[test]
    fn log_level_wins_over_rust_log_and_others_stay_at_warn() {
        let lines = capture(LogFormat::Text, LogLevel::Warn, || {
            tracing::info!("info is below warn");
            tracing::warn!("warn is written");
            tracing::info!(target: "kube_runtime::watcher", "another crate's info");
            tracing::warn!(target: "kube_runtime::watcher", "another crate's warning");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("WARN warn is written"), "{lines:?}");
        assert!(lines[1].ends_with("WARN another crate's warning"));

        // Given, --log-level wins; RUST_LOG is used without it; a bad one falls back to info.
        let (f, problem) = filter(Some(LogLevel::Error), Some("trace"));
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::ERROR)
        );
        assert!(problem.is_none());
        let (f, _) = filter(None, Some("debug"));
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
        let (f, problem) = filter(None, Some("imdsguard=loud"));
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
        assert!(problem.unwrap().contains("RUST_LOG"));
        let (f, _) = filter(None, Some("  "));
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
    }

    #[test]
    fn time_is_rfc3339_utc_with_microseconds() {
        let t = imdsguard_hubble_proto::wkt::Timestamp::new(1_777_889_472, 345_678_901);
        assert_eq!(rfc3339(t), "2026-05-04T10:11:12.345678Z");
    }

    #[test]
    fn objects_split_into_kind_namespace_and_name() {
        assert_eq!(
            object_ref("CiliumNetworkPolicy apps/allow-imds"),
            (Some("CiliumNetworkPolicy"), Some("apps"), "allow-imds")
        );
        assert_eq!(
            object_ref("CiliumClusterwideNetworkPolicy azure-imds-deny"),
            (
                Some("CiliumClusterwideNetworkPolicy"),
                None,
                "azure-imds-deny"
            )
        );
        assert_eq!(object_ref("plain"), (None, None, "plain"));
    }
}
