//! The `imdsguard` command: wires the crates together; no policy logic lives here.

mod cmd;
mod interrupt;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The crate's version (the image's tag and the chart's appVersion) and the commit it was built
/// from (build.rs): `0.1.0 (commit 6a2ac3b)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("IMDSGUARD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "imdsguard",
    version = VERSION,
    about = "Decides which Kubernetes workloads may reach the cloud instance metadata service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check, trace and test Cilium network policies offline.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Observe flows, as `hubble observe` does (filters, formats, --input-file).
    Observe(Box<cmd::observe::ObserveArgs>),
    /// Judge recorded flows again under candidate policies: what would change.
    Replay(cmd::replay::ReplayArgs),
    /// Run the node agent: enforce policies through the eBPF datapath and serve flows.
    Agent(Box<cmd::agent::AgentArgs>),
    /// Show the datapath as the kernel holds it: interfaces, endpoints, counters.
    Status(cmd::status::StatusArgs),
    /// Serve a stand-in for the cloud metadata service (Azure, AWS IMDSv2 or GCP).
    ImdsEmulator(cmd::imds::EmulatorArgs),
    /// The seed's node on this machine: pods as network namespaces and an IMDS emulator.
    #[command(subcommand)]
    Lab(cmd::lab::LabCommand),
    /// Install the agent in a cluster: Cilium's CRDs where missing, RBAC and the DaemonSet
    /// (`--dry-run` prints them).
    Install(cmd::install::InstallArgs),
    /// The seed's story end to end: a lab, the agent enforcing the seed's policies, the flows.
    Demo(cmd::demo::DemoArgs),
    /// Print the version and the git commit this binary was built from.
    Version,
    /// Mount a BPF filesystem at PATH unless one is there (the DaemonSet's init container,
    /// whose image has no shell and no mount(8)).
    #[command(hide = true)]
    MountBpffs {
        #[arg(default_value = "/sys/fs/bpf")]
        path: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => cmd::policy::run(c),
        Command::Observe(a) => cmd::observe::run(*a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Agent(a) => cmd::agent::run(*a),
        Command::Status(a) => cmd::status::run(a),
        Command::ImdsEmulator(a) => cmd::imds::run(a),
        Command::Lab(c) => cmd::lab::run(c),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Install(a) => cmd::install::run(a),
        Command::Version => {
            println!("imdsguard {VERSION}");
            Ok(ExitCode::SUCCESS)
        }
        Command::MountBpffs { path } => imdsguard_datapath::loader::ensure_bpffs(&path)
            .map(|mounted| {
                let what = if mounted { "mounted" } else { "already" };
                println!("{what} a BPF filesystem at {}", path.display());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}
