//! The benchmark client on capnp-actix; it keeps the cross-implementation
//! benchmark contract, `../shared/bench/CONTRACT.md`.
//!
//! `bench-client HOST:PORT WORKLOAD [--calls N] [--size B] [--window W]
//! [--depth D] [--conns C] [--count K] [--seconds S] [--probe-ms P]`
//! connects to a bench server (any implementation), gets its bootstrap
//! `Bench`, runs an untimed warm-up and then the timed phase of WORKLOAD
//! (`latency`, `throughput`, `noop`, `pipeline`, `callback`,
//! `connections`, `payload` or `stream`), checks
//! every result, and prints one JSON line on stdout: calls, seconds,
//! calls/s, nearest-rank p50 and p99 in µs, and the workload's own keys.
//!
//! Exit status: 0 with the result line; 1 with a message on stderr (no
//! result line) on an RPC error, a disconnect, a failed connect or a failed
//! check; 2 on a usage error. All RPC runs on one event-loop thread
//! (`#[actix::main]`); concurrent units are futures of that one task.
//!
//! Outside the contract, for studying streaming: `CAPNP_ACTIX_FLOW` picks
//! the connection's flow control (`fixed:BYTES`, or `adaptive` with
//! optional `:MAX_BYTES:QUEUE_DELAY_US`; default: the library's), and
//! `CAPNP_ACTIX_TRACE_WINDOW=MS` prints the timed stream's window and bytes
//! in flight every MS ms on stderr (`window ms=.. window=.. in_flight=..`).

mod bench;

// The generated code names its types `crate::bench_capnp::...`.
use bench::bench_capnp;
use bench::options::{self, Options, Workload};
use bench::report::{JsonLine, Phase, Timed};
use bench_capnp::{bench as bench_if, callback, sink};
use capnp_actix::{Bootstrap, ConnActor, ConnOptions};
use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::rc::Rc;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error>;

/// One connection to the server: the actor that runs it, and its bootstrap
/// `Bench`.
struct Conn {
    /// Kept so that the connection lives as long as the workload.
    _actor: actix::Addr<ConnActor>,
    bench: bench_if::Client,
}

/// Opens a TCP connection (`from_tcp` sets TCP_NODELAY) and asks for the
/// bootstrap `Bench`; calls on it may go out before the answer is back.
async fn connect(addr: &str) -> Result<Conn, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let actor = ConnActor::from_tcp(stream, conn_options()?);
    let bench = actor.send(Bootstrap).await??.client();
    Ok(Conn {
        _actor: actor,
        bench,
    })
}

/// The connection's options: the library's defaults, or the flow control
/// `CAPNP_ACTIX_FLOW` names.
fn conn_options() -> Result<ConnOptions, BoxError> {
    use capnp_actix::{Adaptive, FlowControl};
    let Ok(flow) = std::env::var("CAPNP_ACTIX_FLOW") else {
        return Ok(ConnOptions::new());
    };
    let parts: Vec<&str> = flow.split(':').collect();
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("CAPNP_ACTIX_FLOW: {s:?}"))
    };
    let flow_control = match parts.as_slice() {
        ["fixed", bytes] => FlowControl::Fixed(number(bytes)? as usize),
        ["adaptive"] => FlowControl::Adaptive(Adaptive::default()),
        ["adaptive", max, delay_us] => FlowControl::Adaptive(
            Adaptive::default()
                .max_window(number(max)? as usize)
                .queue_delay(std::time::Duration::from_micros(number(delay_us)?)),
        ),
        _ => return Err(format!("CAPNP_ACTIX_FLOW: {flow:?}").into()),
    };
    Ok(ConnOptions::new().flow_control(flow_control))
}

/// The warm-up rule of the contract: `min(1000, ceil(n / 10))` units.
fn warmup_units(n: u64) -> u64 {
    n.div_ceil(10).min(1000)
}

/// The bytes of each `echo`: byte i is `(i * 2654435761 mod 2^32) >> 24`,
/// the anchors' non-constant pattern.
fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// One `echo`; the reply must be the bytes sent.
async fn echo(bench: &bench_if::Client, data: &[u8]) -> Result<(), BoxError> {
    let mut request = bench.echo_request();
    request.get().set_data(data);
    let response = request.send().promise.await?;
    if response.get()?.get_data()? != data {
        return Err("echo returned different bytes".into());
    }
    Ok(())
}

/// One `noop()`.
async fn noop(bench: &bench_if::Client) -> Result<(), BoxError> {
    bench.noop_request().send().promise.await?;
    Ok(())
}

/// One `add(a, b)`; the sum must be `a + b`, wrapped.
async fn add(bench: &bench_if::Client, a: i64, b: i64) -> Result<(), BoxError> {
    let mut request = bench.add_request();
    request.get().set_a(a);
    request.get().set_b(b);
    let sum = request.send().promise.await?.get()?.get_sum();
    if sum != a.wrapping_add(b) {
        return Err(format!("add({a}, {b}) returned {sum}").into());
    }
    Ok(())
}

/// One chain: `depth` calls of `next()`, each on the capability the
/// previous one will return (pipelined, not awaited), then `noop()` on the
/// last, which is the only call awaited.
async fn chain(bench: &bench_if::Client, depth: u32) -> Result<(), BoxError> {
    let mut next = bench.next_request().send().pipeline.get_next();
    for _ in 1..depth {
        next = next.next_request().send().pipeline.get_next();
    }
    next.noop_request().send().promise.await?;
    Ok(())
}

/// Runs the units of `phase` with `window` workers, each starting its next
/// unit as soon as its previous one completed, and times every unit.
async fn windowed<F, Fut>(phase: Phase, window: u64, unit: F) -> Result<Timed, BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let worker = || async {
        while phase.claim() {
            let start = Instant::now();
            unit().await?;
            phase.record(start);
        }
        Ok::<(), BoxError>(())
    };
    let workers = window.min(phase.total());
    futures::future::try_join_all((0..workers).map(|_| worker())).await?;
    Ok(phase.finish())
}

/// The warm-up (`warmup_units(calls)` units, untimed) and then the timed
/// phase of `calls` units, both with `window` in flight. Gives the timed
/// phase and the warm-up's size.
async fn warm_up_and_time<F, Fut>(
    options: &Options,
    window: u64,
    unit: F,
) -> Result<(Timed, u64), BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let warmup = warmup_units(options.calls);
    windowed(Phase::new(warmup, None), window, &unit).await?;
    let timed = windowed(Phase::new(options.calls, options.seconds), window, &unit).await?;
    Ok((timed, warmup))
}

/// latency, throughput, payload: `echo` of `--size` bytes, one at a time
/// (throughput: `--window` at once).
async fn run_echo(options: &Options, bench: &bench_if::Client) -> Result<String, BoxError> {
    let data = payload(options.size);
    let window = match options.workload {
        Workload::Throughput => options.window,
        _ => 1,
    };
    let (timed, warmup) = warm_up_and_time(options, window, || echo(bench, &data)).await?;
    let megabytes = timed.calls() as f64 * f64::from(options.size) / 1e6 / timed.secs;
    let mut line = JsonLine::result(bench::IMPL_NAME, options.workload.name(), timed, warmup);
    line.int("size", options.size.into());
    match options.workload {
        Workload::Throughput => {
            line.int("window", window);
        }
        Workload::Payload => {
            line.float("mb_per_sec", megabytes, 2);
        }
        _ => {}
    }
    Ok(line.finish())
}

/// noop: `noop()`, `--window` at once.
async fn run_noop(options: &Options, bench: &bench_if::Client) -> Result<String, BoxError> {
    let (timed, warmup) = warm_up_and_time(options, options.window, || noop(bench)).await?;
    let mut line = JsonLine::result(bench::IMPL_NAME, "noop", timed, warmup);
    line.int("window", options.window);
    Ok(line.finish())
}

/// pipeline: chains of `--depth` pipelined `next()` calls, one at a time.
async fn run_pipeline(options: &Options, bench: &bench_if::Client) -> Result<String, BoxError> {
    let depth = options.depth;
    let (timed, warmup) = warm_up_and_time(options, 1, || chain(bench, depth)).await?;
    let rpc_calls = timed.calls() * (u64::from(depth) + 1);
    let mut line = JsonLine::result(bench::IMPL_NAME, "pipeline", timed, warmup);
    line.int("depth", depth.into()).int("rpc_calls", rpc_calls);
    Ok(line.finish())
}

/// The client's `Callback`: notes when each ping arrives.
struct Pinger {
    arrivals: Rc<RefCell<Vec<Instant>>>,
}

impl callback::Server for Pinger {
    async fn ping(
        self: Rc<Self>,
        _: callback::PingParams,
        _: callback::PingResults,
    ) -> Result<(), capnp::Error> {
        self.arrivals.borrow_mut().push(Instant::now());
        Ok(())
    }
}

/// `callMeBack(callback, count)`; exactly `count` pings must have arrived
/// when it returns.
async fn call_me_back(
    bench: &bench_if::Client,
    callback: &callback::Client,
    arrivals: &RefCell<Vec<Instant>>,
    count: u32,
) -> Result<(), BoxError> {
    arrivals.borrow_mut().clear();
    let mut request = bench.call_me_back_request();
    request.get().set_callback(callback.clone());
    request.get().set_count(count);
    request.send().promise.await?;
    let arrived = arrivals.borrow().len();
    if arrived != count as usize {
        return Err(format!("callMeBack({count}) returned after {arrived} pings").into());
    }
    Ok(())
}

/// callback: one `callMeBack(cb, --count)`; each sample is the interval
/// between consecutive ping arrivals, the first from the start of the call.
async fn run_callback(options: &Options, bench: &bench_if::Client) -> Result<String, BoxError> {
    let count = options.count;
    // Bounded, so that an absurd --count fails later, not here.
    let capacity = count.min(1 << 22) as usize;
    let arrivals = Rc::new(RefCell::new(Vec::with_capacity(capacity)));
    let callback: callback::Client = capnp_actix::new_client(Pinger {
        arrivals: arrivals.clone(),
    });

    let warmup = warmup_units(count.into()) as u32;
    call_me_back(bench, &callback, &arrivals, warmup).await?;

    // The timed phase is that one call (`--seconds` does not cut it); a
    // unit is a ping.
    let start = Instant::now();
    call_me_back(bench, &callback, &arrivals, count).await?;
    let secs = start.elapsed().as_secs_f64();
    let mut previous = start;
    let samples_ns = arrivals
        .borrow()
        .iter()
        .map(|&arrival| {
            let interval = arrival.duration_since(previous);
            previous = arrival;
            interval.as_nanos() as u64
        })
        .collect();
    let timed = Timed {
        secs,
        samples_ns,
        truncated: false,
    };
    let mut line = JsonLine::result(bench::IMPL_NAME, "callback", timed, warmup.into());
    line.int("count", count.into());
    Ok(line.finish())
}

/// connections: `--conns` connections, opened one after the other, each
/// warmed up with one `add`; then all at once, each doing its share of
/// `--calls` adds one at a time.
async fn run_connections(options: &Options) -> Result<String, BoxError> {
    let conn_count = options.conns;
    let connecting = Instant::now();
    let mut conns = Vec::new();
    for i in 0..conn_count {
        let conn = connect(&options.addr).await?;
        add(&conn.bench, i as i64, -1).await?;
        conns.push(conn);
    }
    let connect_secs = connecting.elapsed().as_secs_f64();

    let phase = Phase::new(options.calls, options.seconds);
    let (share, rest) = (options.calls / conn_count, options.calls % conn_count);
    let workers = conns.iter().zip(0u64..).map(|(conn, i)| {
        let phase = &phase;
        let quota = share + u64::from(i < rest);
        async move {
            for j in 0..quota {
                if !phase.may_start() {
                    break;
                }
                let start = Instant::now();
                add(&conn.bench, (i as i64).wrapping_mul(1_000_003), j as i64).await?;
                phase.record(start);
            }
            Ok::<(), BoxError>(())
        }
    });
    futures::future::try_join_all(workers).await?;
    let mut line = JsonLine::result(bench::IMPL_NAME, "connections", phase.finish(), conn_count);
    line.int("conns", conn_count)
        .float("connect_secs", connect_secs, 6);
    Ok(line.finish())
}

/// A new `Sink` of `bench`.
async fn new_sink(bench: &bench_if::Client) -> Result<sink::Client, BoxError> {
    let response = bench.sink_request().send().promise.await?;
    Ok(response.get()?.get_sink()?)
}

/// The units of `phase` as writes of `data` into `sink`, each sent with
/// the streaming call and awaited (its send completes when the window has
/// room, not when the write returns), then `done()`, which must count
/// them all.
async fn stream_into(sink: &sink::Client, data: &[u8], phase: &Phase) -> Result<(), BoxError> {
    let mut written = 0u64;
    while phase.claim() {
        let start = Instant::now();
        let mut request = sink.write_request();
        request.get().set_data(data);
        request.send().await?;
        phase.record(start);
        written += 1;
    }
    let bytes = sink.done_request().send().promise.await?.get()?.get_bytes();
    let expected = written * data.len() as u64;
    if bytes != expected {
        return Err(format!("done() counted {bytes} bytes, not {expected}").into());
    }
    Ok(())
}

/// stream: a warm-up stream into a sink of its own, then the timed one
/// (from its first write to `done()`'s return); with `--probe-ms`, `noop()`
/// probes on the same connection meanwhile, one at a time.
async fn run_stream(options: &Options, bench: &bench_if::Client) -> Result<String, BoxError> {
    let data = payload(options.size);
    let warmup = options.calls.div_ceil(10).min(100);
    stream_into(&new_sink(bench).await?, &data, &Phase::new(warmup, None)).await?;

    let sink = new_sink(bench).await?;
    let phase = Phase::new(options.calls, options.seconds);
    let began = Instant::now();
    let streaming = std::cell::Cell::new(true);
    let probes = RefCell::new(Vec::new());
    let probing = async {
        if options.probe_ms == 0 {
            return Ok::<(), BoxError>(());
        }
        let every = std::time::Duration::from_millis(options.probe_ms);
        let mut next = began + every;
        loop {
            actix_rt::time::sleep_until(next.into()).await;
            if !streaming.get() {
                return Ok(());
            }
            let sent = Instant::now();
            noop(bench).await?;
            probes.borrow_mut().push(sent.elapsed().as_nanos() as u64);
            next = (sent + every).max(Instant::now());
        }
    };
    let tracing = async {
        let Some(every) = std::env::var("CAPNP_ACTIX_TRACE_WINDOW")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
        else {
            return;
        };
        while streaming.get() {
            if let Some(state) = capnp_actix::stream_state(&sink) {
                eprintln!(
                    "window ms={:.1} window={} in_flight={}",
                    began.elapsed().as_secs_f64() * 1e3,
                    state.window,
                    state.in_flight
                );
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(every)).await;
        }
    };
    let writing = async {
        let written = stream_into(&sink, &data, &phase).await;
        streaming.set(false);
        written.map(|()| began.elapsed().as_secs_f64())
    };
    let (written, probed, ()) = futures::join!(writing, probing, tracing);
    let secs = written?;
    probed?;
    // (The timed phase ends with done()'s return, not the last probe's.)
    let timed = Timed {
        secs,
        ..phase.finish()
    };
    let megabytes = timed.calls() as f64 * f64::from(options.size) / 1e6 / timed.secs;
    let mut line = JsonLine::result(bench::IMPL_NAME, "stream", timed, warmup);
    line.int("size", options.size.into())
        .float("mb_per_sec", megabytes, 2);
    if options.probe_ms > 0 {
        let mut probes = probes.into_inner();
        probes.sort_unstable();
        line.int("probe_ms", options.probe_ms)
            .int("probe_calls", probes.len() as u64)
            .float(
                "probe_p50_us",
                bench::report::percentile_us(&probes, 0.5),
                1,
            )
            .float(
                "probe_p99_us",
                bench::report::percentile_us(&probes, 0.99),
                1,
            );
    }
    Ok(line.finish())
}

/// Runs the workload and gives its result line.
async fn run(options: &Options) -> Result<String, BoxError> {
    if options.workload == Workload::Connections {
        return run_connections(options).await;
    }
    let conn = connect(&options.addr).await?;
    let bench = &conn.bench;
    match options.workload {
        Workload::Latency | Workload::Throughput | Workload::Payload => {
            run_echo(options, bench).await
        }
        Workload::Noop => run_noop(options, bench).await,
        Workload::Pipeline => run_pipeline(options, bench).await,
        Workload::Callback => run_callback(options, bench).await,
        Workload::Stream => run_stream(options, bench).await,
        Workload::Connections => unreachable!("handled above"),
    }
}

#[actix::main]
async fn main() {
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("bench-client: {problem}\n{}", options::USAGE);
            std::process::exit(2);
        }
    };
    match run(&options).await {
        Ok(line) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("bench-client: error: {}: {e}", options.workload.name());
            std::process::exit(1);
        }
    }
}
