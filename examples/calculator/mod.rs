//! Pieces shared by the calculator examples: the generated code and their
//! command lines.

#[allow(dead_code, clippy::all)]
pub mod calculator_capnp {
    include!(concat!(env!("OUT_DIR"), "/calculator_capnp.rs"));
}

use capnp_actix::Endpoint;

/// The command line: an ENDPOINT (`HOST:PORT` or `unix:PATH`), then
/// `--workers N` if `workers` is allowed; exits 2 with a usage message if
/// it is anything else.
#[allow(dead_code)] // (the client takes no --workers)
pub fn args(program: &str, workers: bool) -> (Endpoint, Option<usize>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args.first().and_then(|a| a.parse().ok());
    let count = match &args[1.min(args.len())..] {
        [] => Some(None),
        [flag, n] if workers && flag == "--workers" => n.parse().ok().filter(|&n| n > 0).map(Some),
        _ => None,
    };
    match (endpoint, count) {
        (Some(endpoint), Some(count)) => (endpoint, count),
        _ => {
            let extra = if workers { " [--workers N]" } else { "" };
            eprintln!("usage: {program} ADDRESS{extra}   (ADDRESS is HOST:PORT or unix:PATH)");
            std::process::exit(2);
        }
    }
}
