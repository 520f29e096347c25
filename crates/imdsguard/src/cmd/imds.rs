//! `imdsguard imds-emulator`: a stand-in for the cloud metadata service, for the lab and tests.

use anyhow::{Result, bail};
use clap::Args;
use imdsguard_imds::emulator::{Flavor, Options};
use imdsguard_imds::server;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EmulatorArgs {
    /// Where to listen: by default the metadata address, port 80, which the lab gives the
    /// emulator inside a network namespace of its own.
    #[arg(long, default_value_t = server::default_listen())]
    listen: String,
    /// Which metadata service to behave as: azure, aws (IMDSv2) or gcp.
    #[arg(long, default_value = "azure")]
    flavor: String,
    /// AWS: also answer requests without a session token (IMDSv1).
    #[arg(long)]
    aws_allow_v1: bool,
    /// Azure: requests per second for the VM (IMDS's limit is 5).
    #[arg(long, default_value_t = 5)]
    rate_limit: u32,
    /// Append one line per request received (`<client> <METHOD> <target> <status>`) to this file
    /// as well as standard error.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

pub fn run(args: EmulatorArgs) -> Result<ExitCode> {
    let Some(flavor) = Flavor::parse(&args.flavor) else {
        bail!("--flavor must be azure, aws or gcp, got {:?}", args.flavor);
    };
    let log = server::stderr_and_file_log(args.log_file.as_deref())?;
    let opts = Options {
        flavor,
        aws_allow_v1: args.aws_allow_v1,
        rate_per_second: args.rate_limit,
        ..Default::default()
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    super::block_on(server::run(&args.listen, opts, log, ctrl_c))??;
    Ok(ExitCode::SUCCESS)
}
