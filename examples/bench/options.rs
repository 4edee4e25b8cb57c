//! The client's command line, `HOST:PORT WORKLOAD [--name VALUE]...`, with
//! the defaults and the usage errors of the contract.

/// Printed after a usage error.
pub const USAGE: &str = "usage: bench-client HOST:PORT WORKLOAD [--calls N] [--size B] \
[--window W] [--depth D] [--conns C] [--count K] [--seconds S] [--probe-ms P]
WORKLOAD: latency | throughput | noop | pipeline | callback | connections | payload | stream";

/// What the client measures (the contract's table of workloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `echo` of B bytes, one at a time.
    Latency,
    /// `echo` of B bytes, W in flight.
    Throughput,
    /// `noop()`, W in flight.
    Noop,
    /// Chains of D pipelined `next()` calls ended by an awaited `noop()`.
    Pipeline,
    /// One `callMeBack(cb, K)`; each `ping()` is a unit.
    Callback,
    /// `add(a, b)` on C connections at once.
    Connections,
    /// `echo` of B bytes (1 MiB by default), one at a time.
    Payload,
    /// `Sink.write` of B bytes (64 KiB by default), streamed.
    Stream,
}

impl Workload {
    const ALL: [Workload; 8] = [
        Workload::Latency,
        Workload::Throughput,
        Workload::Noop,
        Workload::Pipeline,
        Workload::Callback,
        Workload::Connections,
        Workload::Payload,
        Workload::Stream,
    ];

    /// The name on the command line and in the result line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Latency => "latency",
            Workload::Throughput => "throughput",
            Workload::Noop => "noop",
            Workload::Pipeline => "pipeline",
            Workload::Callback => "callback",
            Workload::Connections => "connections",
            Workload::Payload => "payload",
            Workload::Stream => "stream",
        }
    }

    fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// `--calls` when not given (`callback` counts `--count` instead).
    fn default_calls(self) -> u64 {
        match self {
            Workload::Latency | Workload::Connections => 20_000,
            Workload::Throughput | Workload::Noop => 100_000,
            Workload::Pipeline | Workload::Stream => 2_000,
            Workload::Payload => 200,
            Workload::Callback => 0,
        }
    }

    /// `--size` when not given.
    fn default_size(self) -> u32 {
        match self {
            Workload::Payload => 1 << 20,
            Workload::Stream => 1 << 16,
            _ => 8,
        }
    }
}

/// The parsed command line, defaults applied.
#[derive(Clone, Debug)]
pub struct Options {
    /// `HOST:PORT` of the server.
    pub addr: String,
    /// What to run.
    pub workload: Workload,
    /// Units of the timed phase.
    pub calls: u64,
    /// Bytes of `data` in each `echo`.
    pub size: u32,
    /// Calls in flight at once (throughput, noop).
    pub window: u64,
    /// `next()` calls per chain (pipeline).
    pub depth: u32,
    /// TCP connections (connections).
    pub conns: u64,
    /// Pings requested (callback).
    pub count: u32,
    /// Time cap of the timed phase.
    pub seconds: Option<f64>,
    /// Milliseconds between latency probes during a stream; 0: none.
    pub probe_ms: u64,
}

/// A decimal integer of at most `max`: digits only, no sign, no spaces.
fn parse_uint(flag: &str, value: Option<String>, max: u64) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let number = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u64>().ok().filter(|&n| n <= max)
    } else {
        None
    };
    number.ok_or_else(|| format!("{flag}: not a valid number: {value:?}"))
}

/// A positive, finite number of seconds.
fn parse_seconds(value: Option<String>) -> Result<f64, String> {
    let value = value.ok_or("--seconds needs a value")?;
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!(
            "--seconds must be a positive number, not {value:?}"
        )),
    }
}

/// Parses the arguments after the program's name. `Err` is a usage error:
/// the message to print before exiting with status 2.
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let addr = args.next().ok_or("missing HOST:PORT")?;
    if super::split_host_port(&addr).is_none() {
        return Err(format!("expected HOST:PORT, got {addr:?}"));
    }
    let name = args.next().ok_or("missing WORKLOAD")?;
    let workload =
        Workload::from_name(&name).ok_or_else(|| format!("unknown workload {name:?}"))?;

    let (mut calls, mut size) = (None, None);
    let (mut window, mut depth, mut conns, mut count) = (128, 10, 200, 20_000);
    let mut seconds = None;
    let mut probe_ms = 0;
    // `--name VALUE` pairs in any order; the last of a repeated one counts.
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--calls" => calls = Some(parse_uint(&flag, value, u64::MAX)?),
            "--size" => size = Some(parse_uint(&flag, value, u32::MAX.into())? as u32),
            "--window" => window = parse_uint(&flag, value, u64::MAX)?,
            "--depth" => depth = parse_uint(&flag, value, u32::MAX.into())? as u32,
            "--conns" => conns = parse_uint(&flag, value, u64::MAX)?,
            "--count" => count = parse_uint(&flag, value, u32::MAX.into())? as u32,
            "--seconds" => seconds = Some(parse_seconds(value)?),
            "--probe-ms" => probe_ms = parse_uint(&flag, value, u32::MAX.into())?,
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }

    let calls = calls.unwrap_or_else(|| workload.default_calls());
    if calls == 0 && workload != Workload::Callback {
        return Err("--calls must be at least 1".into());
    }
    if window == 0 || depth == 0 || conns == 0 || count == 0 {
        return Err("--window, --depth, --conns and --count must be at least 1".into());
    }
    let size = size.unwrap_or_else(|| workload.default_size());
    if size == 0 && workload == Workload::Stream {
        return Err("--size must be at least 1 for stream".into());
    }
    Ok(Options {
        addr,
        workload,
        calls,
        size,
        window,
        depth,
        conns,
        count,
        seconds,
        probe_ms,
    })
}
