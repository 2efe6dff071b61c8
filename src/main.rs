//! The `poplar` binary: parse the command line, start logging, serve, and map the outcome to
//! an exit code (0 ok, 1 runtime error, 2 usage).

use std::process::ExitCode;

use poplar::cli::{self, Action};
use poplar::config::Config;
use poplar::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(&args) {
        Ok(Action::Run(c)) => c,
        Ok(Action::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("poplar {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Pw(args)) => return pw(args),
        Err(e) => {
            let usage = if args.first().map(String::as_str) == Some("pw") {
                poplar::pw::usage()
            } else {
                cli::usage()
            };
            eprintln!("poplar: {e}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("POPLAR_LOG", "info")).init();
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("poplar: {e}");
            ExitCode::from(1)
        }
    }
}

fn pw(args: poplar::pw::Args) -> ExitCode {
    match args {
        poplar::pw::Args::Help => {
            print!("{}", poplar::pw::usage());
            ExitCode::SUCCESS
        }
        poplar::pw::Args::Hash(scheme) => match poplar::pw::run(scheme) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("poplar pw: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn serve(config: &Config) -> Result<(), String> {
    if config.idle_timeout < poplar::limits::DEFAULT_IDLE_TIMEOUT {
        log::warn!("--idle-timeout below 600 s is shorter than RFC 1939 allows");
    }
    let mut server = Server::from_config(config)?;
    server
        .handle_signals()
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    server.run().map_err(|e| format!("server failed: {e}"))
}
