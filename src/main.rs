//! The `poplar` binary: parse the command line, start logging, serve, and map the outcome to
//! an exit code (0 ok, 1 runtime error, 2 usage).

use std::process::ExitCode;

use poplar::cli::{self, Action};
use poplar::config::Config;
use poplar::listeners;
use poplar::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(&args) {
        Ok(Action::Run(c)) => c,
        Ok(Action::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Action::SubcommandHelp(usage)) => {
            print!("{usage}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("poplar {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Pw(args)) => return pw(args),
        Ok(Action::Deliver(d)) => {
            init_logging();
            return poplar::deliver::run(&d);
        }
        Ok(Action::Seed(s)) => {
            // Breaking a stale dotlock is logged as a warning, as for deliver.
            init_logging();
            return poplar::seed::run(&s);
        }
        Ok(Action::Check(c)) => return poplar::check::run(&c),
        Err(e) if args.first().is_some_and(|a| a == "seed") => {
            eprintln!("poplar seed: {e}\n\n{}", poplar::seed::usage());
            return ExitCode::from(2);
        }
        Err(e) if args.first().is_some_and(|a| a == "check") => {
            eprintln!("poplar check: {e}\n\n{}", poplar::check::usage());
            return ExitCode::from(2);
        }
        Err(e) if args.first().is_some_and(|a| a == "deliver") => {
            eprintln!("poplar deliver: {e}\n\n{}", poplar::deliver::usage());
            return ExitCode::from(poplar::deliver::EX_USAGE);
        }
        Err(e) if args.first().is_some_and(|a| a == "pw") => {
            eprintln!("poplar pw: {e}\n\n{}", poplar::pw::usage());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("poplar: {e}\n\n{}", cli::usage());
            return ExitCode::from(2);
        }
    };
    // Under classic inetd stderr is the client's socket: log nowhere rather than to the client.
    if !(config.inetd && poplar::inetd::stderr_is_the_client()) {
        init_logging();
    }
    let outcome = if config.dev.is_some() {
        poplar::dev::run(&config)
    } else if config.inetd {
        poplar::inetd::run(&config).map(|_| ())
    } else {
        serve(&config)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr, which is also where the log goes: logging it too would
            // print the same error twice.
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

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("POPLAR_LOG", "info")).init();
}

fn serve(config: &Config) -> Result<(), String> {
    if config.idle_timeout < poplar::limits::DEFAULT_IDLE_TIMEOUT {
        log::warn!("--idle-timeout below 600 s is shorter than RFC 1939 allows");
    }
    let inherited =
        listeners::inherited().map_err(|e| format!("cannot use the sockets from systemd: {e}"))?;
    let mut server = if inherited.is_empty() {
        Server::from_config(config)?
    } else {
        log::info!(
            "socket activation: serving {} inherited sockets; --listen is ignored",
            inherited.len()
        );
        Server::from_inherited(config, inherited)?
    };
    server
        .handle_signals()
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    server.run().map_err(|e| format!("server failed: {e}"))
}
