//! Pieces shared by the calculator examples: the generated code and how
//! an ADDRESS (`HOST:PORT` or `unix:PATH`) is parsed.

#[allow(dead_code, clippy::all)]
pub mod calculator_capnp {
    include!(concat!(env!("OUT_DIR"), "/calculator_capnp.rs"));
}

/// Where to listen or connect.
pub enum Address {
    /// A TCP address, `HOST:PORT`.
    Tcp(String),
    /// A Unix-domain socket, `unix:PATH`.
    Unix(std::path::PathBuf),
}

impl Address {
    /// Parses `HOST:PORT` or `unix:PATH`.
    pub fn parse(text: &str) -> Option<Address> {
        if let Some(path) = text.strip_prefix("unix:") {
            return (!path.is_empty()).then(|| Address::Unix(path.into()));
        }
        text.rsplit_once(':')
            .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            .map(|_| Address::Tcp(text.to_string()))
    }
}

/// The command line's one argument, or exit 2 with a usage message.
pub fn address_from_args(program: &str) -> Address {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [one] => match Address::parse(one) {
            Some(address) => address,
            None => usage(program),
        },
        _ => usage(program),
    }
}

fn usage(program: &str) -> ! {
    eprintln!("usage: {program} ADDRESS   (ADDRESS is HOST:PORT or unix:PATH)");
    std::process::exit(2);
}
