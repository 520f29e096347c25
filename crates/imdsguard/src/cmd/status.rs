//! `imdsguard status`: the datapath as the kernel holds it (endpoints, policy revisions, the TCX
//! chains, which `tc filter show` cannot list, and counters), read from the pins. With
//! `--server`, a Hubble server's view instead: against Relay, every node it is connected to, as
//! `hubble status` and `hubble list nodes` print them.

use super::observe::TlsArgs;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The BPF filesystem the agent pins to (its --bpf-root).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpf_root: PathBuf,
    /// The agent's API socket (its --socket-path); the agent's view is shown when it answers.
    #[arg(long, default_value = "/var/run/imdsguard/imdsguard.sock")]
    socket_path: PathBuf,
    /// Only ask the agent whether it is enforcing its first complete view: exit 0 if so, 1 if
    /// not (the DaemonSet's readiness probe).
    #[arg(long, conflicts_with = "server")]
    ready: bool,
    /// Ask a Hubble server instead (Relay: `relay:4245`, or one agent's `host:4244`): its flow
    /// counts and its nodes with their state, as `hubble status` and `hubble list nodes` show
    /// them. Exits 1 when a node is not connected.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Output format: text or json (and, with --server, wide: the nodes' version, address and
    /// TLS).
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
}

pub fn run(args: StatusArgs) -> Result<ExitCode> {
    if let Some(server) = args.server.clone() {
        return hubble(&args, server);
    }
    if args.ready {
        return Ok(if imdsguard_agent::status::ready(&args.socket_path)? {
            println!("ready");
            ExitCode::SUCCESS
        } else {
            println!("not ready: the agent has not enforced a complete view of its inputs yet");
            ExitCode::from(1)
        });
    }
    let (out, healthy) =
        imdsguard_agent::status::report(&args.bpf_root, &args.socket_path, &args.output)?;
    print!("{out}");
    // Exit 1 when enforcement is not complete: a program that is not first, or a stale pin.
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--server`: ServerStatus and GetNodes.
fn hubble(args: &StatusArgs, server: String) -> Result<ExitCode> {
    let client = args.tls.client(server)?;
    let (out, all_connected) = super::block_on(client.status_report(&args.output))??;
    print!("{out}");
    Ok(if all_connected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
