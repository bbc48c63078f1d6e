//! `fabric function`: serve the composition function to Crossplane.

use std::process::ExitCode;

/// Serve the Crossplane composition function (function-fabric) over gRPC.
///
/// Crossplane calls it for every Machine (and legacy XMachine) in a
/// Pipeline-mode Composition. It validates the Machine, renders its
/// cloud-init user-data exactly as `fabric render` does, and answers with
/// the Proxmox managed resources to create: provider-proxmox-bpg's
/// EnvironmentFile and EnvironmentVM, or one provider-terraform Workspace,
/// as the step's fabric.kubelize.io/v1beta1 Input says.
///
/// It serves mTLS from --tls-certs-dir (tls.crt, tls.key and ca.crt;
/// clients must present a certificate signed by ca.crt), which is what
/// Crossplane's function runtime provides. Without certificates it refuses
/// to start unless --insecure is given, for local use with `crossplane
/// render` and a functions.yaml with the Development runtime annotation.
/// The gRPC health and reflection services are served beside it, and
/// SIGTERM or Ctrl-C stops it after in-flight calls finish. Logs are JSON
/// lines on stderr (--debug: text).
///
/// Metrics (OpenMetrics, /metrics) are served on port 8080 of the host
/// --address listens on, unless --metrics-address (METRICS_ADDRESS) says
/// otherwise: never wider than the function itself. In Crossplane's pod
/// the default --address 0.0.0.0:9443 gives 0.0.0.0:8080, where Prometheus
/// scrapes functions; a local --address 127.0.0.1:9443 keeps them on
/// 127.0.0.1:8080.
///
/// Exit status: 0 after a clean shutdown; 1 it cannot serve (an address
/// in use or not of this host, the transport failing); 2 a bad flag: an
/// address that does not parse, no certificates without --insecure, or
/// certificates that cannot be read.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    fabric function --insecure --address 127.0.0.1:9443 --debug\n  \
    fabric function --tls-certs-dir /tls/server")]
// The SDK's flags struct is also called Args; clap names argument groups
// after the struct, and two groups may not share a name.
#[group(id = "FunctionArgs")]
pub struct Args {
    /// The standard composition-function flags, shared with every function
    /// built on function-sdk-rust.
    #[command(flatten)]
    pub sdk: function_sdk_rust::Args,
}

/// The SDK's `--metrics-address` with Fabric's default, which depends on
/// --address and so is resolved in [`run`], not by clap.
pub fn adjust(cmd: clap::Command) -> clap::Command {
    cmd.mut_arg("metrics_address", |a| {
        a.hide_default_value(true).help(
            "Serve metrics at /metrics here (OpenMetrics); empty serves none \
             [default: the host of --address, port 8080]",
        )
    })
}

/// Whether --metrics-address (or METRICS_ADDRESS) was given, rather than
/// left to its default.
pub fn metrics_address_given(matches: &clap::ArgMatches) -> bool {
    matches
        .value_source("metrics_address")
        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
}

pub fn run(mut args: Args, metrics_address_given: bool) -> ExitCode {
    if !metrics_address_given {
        args.sdk.metrics_address = fabric_function::metrics_address_beside(&args.sdk.address);
    }
    function_sdk_rust::logging::configure(args.sdk.debug);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fabric function: cannot start the async runtime: {e}");
            return ExitCode::from(crate::exit::FAILED);
        }
    };
    match runtime.block_on(fabric_function::serve(&args.sdk)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the function");
            eprintln!("fabric function: {e}");
            ExitCode::from(match e {
                fabric_function::ServeError::Usage(_) => crate::exit::USAGE,
                fabric_function::ServeError::Failed(_) => crate::exit::FAILED,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn standard_flags_and_defaults() {
        let cli = Cli::try_parse_from(["fabric", "--insecure"]).map_err(|e| e.to_string());
        let sdk = cli.map(|c| c.args.sdk);
        assert_eq!(sdk.as_ref().map(|a| a.address.as_str()), Ok("0.0.0.0:9443"));
        assert_eq!(sdk.as_ref().map(|a| a.insecure), Ok(true));
        let cli = Cli::try_parse_from([
            "fabric",
            "--tls-certs-dir",
            "/tls",
            "--address",
            "127.0.0.1:1",
            "--debug",
            "--metrics-address",
            "127.0.0.1:8080",
        ])
        .map_err(|e| e.to_string());
        let sdk = cli.map(|c| c.args.sdk);
        assert_eq!(
            sdk.as_ref().map(|a| a.tls_certs_dir.clone()),
            Ok(Some("/tls".into()))
        );
        assert_eq!(sdk.as_ref().map(|a| a.debug), Ok(true));
        assert_eq!(
            sdk.as_ref().map(|a| a.metrics_address.as_str()),
            Ok("127.0.0.1:8080")
        );
    }
}
