//! The `imdsguard` command: wires the crates together; no policy logic lives here.

mod cmd;
mod interrupt;
mod sources;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "imdsguard",
    version,
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}
