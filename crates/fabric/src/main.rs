//! The `fabric` command: clap definitions and glue only. The work lives in
//! `fabric-model`, `fabric-cloudinit`, `fabric-function` and `fabric-converge`.

mod cmd;
mod exit;
mod machines;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Declare NixOS machines on Proxmox in Git, and keep them that way.
///
/// A Machine manifest (apiVersion infra.kubelize.io/v1alpha1) becomes the
/// cloud-init files a VM reads at first boot (`render`, `seed`), the Proxmox
/// resources Crossplane creates (`function`, `compose`), and a NixOS system
/// that keeps converging on what Git says (`bootstrap`, `agent`).
#[derive(Debug, Parser)]
#[command(
    name = "fabric",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = exit::RULE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Render(cmd::render::Args),
    Seed(cmd::seed::Args),
    Validate(cmd::validate::Args),
    Compose(cmd::compose::Args),
    Function(cmd::function::Args),
    Bootstrap(cmd::bootstrap::Args),
    Agent(cmd::agent::Args),
    Status(cmd::status::Args),
    Doctor(cmd::doctor::Args),
}

/// The command line as users see it: the derived one, with the SDK's
/// `--metrics-address` default replaced by Fabric's (see `fabric function`).
fn command_line() -> clap::Command {
    Cli::command().mut_subcommand("function", cmd::function::adjust)
}

fn main() -> ExitCode {
    // clap's `help` subcommand takes command names only, so `fabric help
    // --help` would be a usage error; it asks for the help, so give it.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == "help" && (argv[2] == "--help" || argv[2] == "-h") {
        let _ = command_line().print_long_help();
        return ExitCode::SUCCESS;
    }
    let matches = command_line().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Render(args) => cmd::render::run(args),
        Command::Seed(args) => cmd::seed::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Compose(args) => cmd::compose::run(args),
        Command::Function(args) => {
            let given = matches
                .subcommand_matches("function")
                .is_some_and(cmd::function::metrics_address_given);
            cmd::function::run(args, given)
        }
        Command::Bootstrap(args) => cmd::bootstrap::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
        super::command_line().debug_assert();
    }
}
