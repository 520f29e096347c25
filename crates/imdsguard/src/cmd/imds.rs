//! `imdsguard imds-emulator`: a stand-in for the cloud metadata service, for the lab and tests.

use anyhow::{Context, Result, bail};
use clap::Args;
use imdsguard_imds::emulator::{Flavor, Options};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Args, Debug)]
pub struct EmulatorArgs {
    /// Where to listen. In the lab this is 169.254.169.254:80 inside the emulator's own namespace.
    #[arg(long, default_value = "169.254.169.254:80")]
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
    let file = match &args.log_file {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        )),
        None => None,
    };
    let log: imdsguard_imds::server::Log = Arc::new(move |line: String| {
        eprintln!("request: {line}");
        if let Some(f) = &file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{line}");
        }
    });
    let opts = Options {
        flavor,
        aws_allow_v1: args.aws_allow_v1,
        rate_per_second: args.rate_limit,
        ..Default::default()
    };
    super::block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "imds-emulator: serving {} on {}",
            args.flavor.to_ascii_lowercase(),
            listener.local_addr()?
        );
        tokio::select! {
            r = imdsguard_imds::server::serve(listener, opts, log) => r.context("serving")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, anyhow::Error>(())
    })??;
    Ok(ExitCode::SUCCESS)
}
