//! `imdsguard demo`: the seed's story, end to end, with real traffic on this machine
//! (imdsguard-lab's `demo`).

use anyhow::{Context, Result};
use clap::Args;
use imdsguard_lab::demo::{self, DemoOptions, Output};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leave the lab and the agent running at the end, for `imdsguard observe` and curl by hand.
    #[arg(long)]
    keep: bool,
    /// The seed's policies.
    #[arg(long, default_value = "examples/azure-imds")]
    policies: PathBuf,
    #[arg(long, default_value = "examples/azure-imds/lab.yaml")]
    topology: PathBuf,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    // Ctrl-C stops the demo between steps; the demo then cleans up.
    let interrupted = crate::interrupt::flag();
    let opts = DemoOptions {
        keep: args.keep,
        policies: args.policies,
        topology: args.topology,
        binary: std::env::current_exe().context("finding the imdsguard binary")?,
        interrupted,
    };
    let out = Output {
        line: &|l| println!("{l}"),
        problem: &|l| eprintln!("{l}"),
        styled: std::io::stdout().is_terminal(),
    };
    Ok(if demo::run(&opts, &out)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
