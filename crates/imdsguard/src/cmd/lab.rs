//! `imdsguard lab up|down|status|exec`: the seed's node on one machine (imdsguard-lab).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use imdsguard_lab::lab::{self, IMDS_ADDRESS, LAB_MARK, UpOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Create the pods, the IMDS emulator and the routes between them, and start the containers.
    Up(UpArgs),
    /// Remove everything a lab made (also after a failed or interrupted `up`).
    Down(NameArgs),
    /// Show a lab's pods, addresses, interfaces and processes.
    Status(NameArgs),
    /// Run a command in a pod's container (its cgroup, then its network namespace):
    /// `lab exec go-webapp-… -c istio-proxy -- curl …`.
    Exec(ExecArgs),
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[arg(long, default_value = "lab")]
    name: String,
    /// Where lab state lives.
    #[arg(long, default_value = "/run/imdsguard/lab")]
    state_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    lab: NameArgs,
    /// The topology: pods, their containers and the metadata flavour.
    #[arg(long, default_value = "examples/azure-imds/lab.yaml")]
    topology: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    lab: NameArgs,
    /// The pod (its name), `node` for the lab's node (a process of no pod), or `imds` for the
    /// emulator's namespace.
    pod: String,
    /// The container (default: the pod's first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => {
            let topology = imdsguard_lab::topology::load(&a.topology)?;
            let state = lab::up(
                &topology,
                &UpOptions {
                    interrupted: crate::interrupt::flag(),
                    name: a.lab.name.clone(),
                    state_root: a.lab.state_dir.clone(),
                    binary: std::env::current_exe().context("finding the imdsguard binary")?,
                    mark: LAB_MARK,
                },
                &|step| eprintln!("lab: {step}"),
            )?;
            println!(
                "lab {:?} is up: {} pods; IMDS at {IMDS_ADDRESS} (requests logged to {})",
                state.name,
                state.pods.len(),
                state.imds_log().display()
            );
            let cgroups = state
                .cgroup_root
                .as_ref()
                .map(|r| format!(" --cgroup-root {}", r.display()))
                .unwrap_or_default();
            let host_network = if state.has_host_network_pods() {
                " --host-network-pods enforce"
            } else {
                ""
            };
            println!(
                "enforce it with: imdsguard agent --endpoints {} --policies DIR --proxy-upstream-mark {LAB_MARK:#x}{cgroups}{host_network}",
                state.endpoints_file().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down(a) => {
            let state = lab::load(&a.state_dir, &a.name)?;
            let problems = lab::down(&state);
            for p in &problems {
                eprintln!("lab down: {p}");
            }
            if problems.is_empty() {
                println!("lab {:?} is down", a.name);
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        LabCommand::Status(a) => {
            let state = lab::load(&a.state_dir, &a.name)?;
            for line in lab::status_report(&state) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec(a) => {
            let state = lab::load(&a.lab.state_dir, &a.lab.name)?;
            let status = lab::exec_in(&state, &a.pod, a.container.as_deref(), &a.command)?
                .status()
                .context("running the command")?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
    }
}
