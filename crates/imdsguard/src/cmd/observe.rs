//! `imdsguard observe`: `hubble observe` for imdsguard's flows (and for flows recorded with Hubble).

use anyhow::{Result, bail};
use clap::Args;
use imdsguard_flow::observe::{self, FilterArgs, Observe, ObserveOptions};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_hubble_server::client::{ClientOptions, ClientTls};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Read flows from a file of `hubble observe -o jsonpb` lines (`-` for stdin).
    #[arg(long, value_name = "FILE|-", conflicts_with = "server")]
    input_file: Option<String>,
    /// A Hubble Observer API: the agent (`localhost:4244`, `unix:///path/hubble.sock`) or Relay
    /// (`relay:4245`); `tls://host:port` connects with TLS.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Print the FlowFilters as JSON and exit.
    #[arg(long)]
    print_raw_filters: bool,
    #[command(flatten)]
    options: ObserveOptions,
    #[command(flatten)]
    filters: FilterArgs,
}

/// The hubble CLI's TLS flags, for `--server` (here and in `imdsguard status`).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect to the server with TLS (a `tls://` server address does too).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM, comma-separated list) to verify the server with; default: the
    /// system's.
    #[arg(long, value_delimiter = ',', value_name = "FILES")]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// A client certificate (PEM), for servers that require one (mTLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the server address's host), e.g.
    /// `node-a.default.hubble-grpc.cilium.io` for an agent, `*.hubble-relay.cilium.io` names
    /// for Relay.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// How to reach `server`: TLS with `--tls` or a `tls://` address; the TLS flags alone
    /// (without either) are refused rather than ignored.
    pub fn client(&self, server: String) -> Result<ClientOptions> {
        let settings = ClientTls {
            ca_cert_files: self.tls_ca_cert_files.clone(),
            client_cert_file: self.tls_client_cert_file.clone(),
            client_key_file: self.tls_client_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        };
        Ok(ClientOptions::from_flags(server, self.tls, settings)?)
    }
}

pub fn run(args: ObserveArgs) -> Result<ExitCode> {
    let filters = args.filters.build()?;
    if args.print_raw_filters {
        observe::write_all_raw_filters(&mut std::io::stdout().lock(), &filters)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut session = Observe::with_filters(&args.options, filters, Timestamp::now())?;
    if let Some(server) = args.server {
        let req = session.request()?;
        let client = args.tls.client(server)?;
        super::block_on(client.print_flows(req, session.printer(), &mut std::io::stdout()))??;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(input) = &args.input_file else {
        bail!(
            "no flow source: give --server ADDR (an imdsguard agent or any Hubble server) or --input-file FILE"
        );
    };
    session.read_input(input, std::io::stdout().lock(), &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        observe: ObserveArgs,
    }

    #[test]
    fn tls_flags_are_the_hubble_clis() {
        let parse = |args: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("observe").chain(args.iter().copied()),
            )
            .expect("parses");
            cli.observe.tls.client("relay:4245".into())
        };
        let o = parse(&[
            "--tls",
            "--tls-ca-cert-files",
            "a.crt,b.crt",
            "--tls-client-cert-file",
            "c.crt",
            "--tls-client-key-file",
            "c.key",
            "--tls-server-name",
            "node-a.default.hubble-grpc.cilium.io",
        ])
        .expect("TLS options");
        let tls = o.tls.expect("TLS on");
        assert_eq!(tls.ca_cert_files.len(), 2);
        assert_eq!(
            tls.server_name.as_deref(),
            Some("node-a.default.hubble-grpc.cilium.io")
        );
        assert!(parse(&[]).expect("plaintext").tls.is_none());
        // A TLS flag without --tls would be ignored by a plaintext connection: refused instead.
        assert!(parse(&["--tls-ca-cert-files", "a.crt"]).is_err());
    }
}
