//! `imdsguard replay` from flags to report: a flow file judged under a repository, the report
//! written as text or JSON. The binary keeps only its flags.

use crate::{GroupBy, Inputs, Replay, TextOptions};
use imdsguard_flow::jsonline::{FlowReader, ReadError};
use imdsguard_policy::Repository;
use std::io::{self, Write};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("opening {path} (the --flows file)")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the report")]
    Write(#[from] io::Error),
}

/// How one replay reads and reports.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions<'a> {
    /// The flows' file; `-` for stdin.
    pub flows: &'a str,
    /// The candidates, for the report's first line.
    pub policies: usize,
    pub cidr_groups: usize,
    pub group_by: GroupBy,
    pub details: bool,
    pub json: bool,
    /// Show progress on `warn` for large files (when it is a terminal).
    pub progress: bool,
}

/// Judges the flows of `opts.flows` under `repo` and writes the report to `out`; malformed
/// lines and progress go to `warn`.
pub fn replay_file(
    repo: Repository,
    opts: FileOptions,
    out: &mut impl Write,
    warn: &mut dyn Write,
) -> Result<(), ReplayError> {
    let mut replay = Replay::new(repo, opts.group_by);
    let mut reader = FlowReader::open(opts.flows).map_err(|source| ReplayError::Open {
        path: opts.flows.to_owned(),
        source,
    })?;
    replay.read(&mut reader, opts.progress, warn)?;
    let report = replay.report();
    let inputs = Inputs {
        flows: opts.flows,
        policies: opts.policies,
        cidr_groups: opts.cidr_groups,
    };
    if opts.json {
        report.write_json(out, &inputs)?;
    } else {
        let text = TextOptions {
            details: opts.details,
            group_by: opts.group_by,
        };
        report.write_text(out, &inputs, text)?;
    }
    out.flush()?;
    Ok(())
}
