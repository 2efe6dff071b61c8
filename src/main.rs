//! The `poplar` binary: parse the command line, start logging, hand off to a subcommand or to
//! a way of serving, and map the outcome to an exit code (0 ok, 1 runtime error, 2 usage).

use std::process::ExitCode;

use poplar::cli::{self, Action};
use poplar::logline::{self, LogFormat};
use poplar::run;

// The 64-bit static (musl) builds use jemalloc: with musl's own malloc poplar served 20 to 70 %
// fewer sessions and RETR octets per second than the glibc build. mimalloc was as fast, but
// keeps each thread's pages to that thread: an idle session held 200-600 KiB (jemalloc
// configured below: 20-27 KiB, as glibc). The armv7 build keeps musl's malloc, which is frugal;
// there mimalloc failed its first allocation under qemu-arm.
#[cfg(all(target_env = "musl", target_pointer_width = "64"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's options, read at its first allocation (before main): one arena per CPU, and no
// per-thread caches, which would hold ~180 KiB for every idle session thread. The symbol is
// jemalloc's `malloc_conf` under the prefix tikv-jemalloc-sys builds it with; jemalloc's own
// definition is weak, so this one is used.
#[cfg(all(target_env = "musl", target_pointer_width = "64"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 33] = b"percpu_arena:percpu,tcache:false\0";

fn main() -> ExitCode {
    cap_malloc();
    let config = match cli::parse_os(std::env::args_os().skip(1).collect()) {
        Ok(Action::Serve(config)) => config,
        Ok(Action::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Command(command)) => {
            if command.logs() {
                logline::init(LogFormat::Text);
            }
            return command.run();
        }
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    // Under classic inetd stderr is the client's socket: log nowhere rather than to the client.
    if !(config.inetd && run::inetd::stderr_is_the_client()) {
        logline::init(config.log_format);
    }
    match run::serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr, which is also where the log goes: logging it too would
            // print the same error twice.
            eprintln!("poplar: {e}");
            ExitCode::from(1)
        }
    }
}

/// Keeps glibc's allocator from holding freed memory for idle sessions: a fixed mmap threshold
/// and one arena per core (`limits::MALLOC_MMAP_THRESHOLD` and `malloc_arenas` say why).
#[cfg(target_env = "gnu")]
fn cap_malloc() {
    use poplar::limits;
    let clamp = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, clamp(limits::MALLOC_MMAP_THRESHOLD));
        libc::mallopt(libc::M_ARENA_MAX, clamp(limits::malloc_arenas()));
    }
}

#[cfg(not(target_env = "gnu"))]
fn cap_malloc() {}
