//! Test driver: runs one bootstrap, one agent cycle or the agent daemon in
//! a process of its own, so that the integration tests can run two at once,
//! `kill -9` one mid-build, send SIGTERM, and listen on `NOTIFY_SOCKET`.
//! The `fabric` CLI is the real front end; this is only its engine call.
//!
//! ```text
//! fabric-converge-driver bootstrap ROOT
//! fabric-converge-driver agent-once ROOT [HEALTH-CHECK]...
//! fabric-converge-driver agent ROOT INTERVAL
//! ```
//! Prints the result as JSON on stdout and exits with the engine's code.

use std::process::ExitCode;

use fabric_converge::agent::{Agent, AgentOptions};
use fabric_converge::bootstrap::{self, BootstrapOptions};
use fabric_converge::deploy::{ActivationMode, HealthCheck};
use fabric_converge::process::{Cancel, Runner};
use fabric_converge::{layout, parse_duration, Root};

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: fabric-converge-driver bootstrap ROOT | agent-once ROOT [CHECK]... | agent ROOT INTERVAL");
        ExitCode::from(layout::exit::USAGE)
    };
    let (Some(mode), Some(root)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let root = match Root::new(root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(layout::exit::USAGE);
        }
    };
    let cancel = match Cancel::on_termination_signals() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(layout::exit::FAILED);
        }
    };
    match mode.as_str() {
        "bootstrap" => {
            let mut opts = BootstrapOptions::new(root);
            opts.activator.mode = ActivationMode::Direct;
            let result = bootstrap::bootstrap(&opts, &Runner::new(), &cancel);
            match &result {
                Ok(r) => println!("{}", serde_json::to_string(r).unwrap_or_default()),
                Err(e) => println!(
                    "{}",
                    serde_json::json!({"result": "failed", "error": e.to_string()})
                ),
            }
            ExitCode::from(bootstrap::exit_code(&result))
        }
        "agent-once" | "agent" => {
            let mut opts = AgentOptions::new(root);
            opts.activator.mode = ActivationMode::Direct;
            if mode == "agent" {
                match args.get(2).map(|s| parse_duration(s)) {
                    Some(Ok(d)) => opts.interval = d,
                    _ => return usage(),
                }
            } else {
                for check in &args[2..] {
                    match HealthCheck::parse(check) {
                        Ok(c) => opts.activator.health_checks.push(c),
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::from(layout::exit::USAGE);
                        }
                    }
                }
            }
            let agent = Agent::new(opts, Runner::new(), cancel);
            if mode == "agent" {
                return ExitCode::from(agent.run());
            }
            let result = agent.cycle();
            println!("{}", serde_json::to_string(&result).unwrap_or_default());
            ExitCode::from(result.exit_code())
        }
        _ => usage(),
    }
}
