//! The benchmark server on capnp-actix; it keeps the cross-implementation
//! benchmark contract, `../shared/bench/CONTRACT.md`.
//!
//! `bench-server [--workers N] HOST:PORT` listens on HOST:PORT (PORT 0 picks a free
//! port), prints `listening HOST:PORT` with the bound port on stdout, and
//! serves every TCP connection a fresh `Bench` (`schema/bench.capnp`) as its
//! bootstrap capability: `echo`, `noop`, `next` (a new `Bench`), `add`
//! (wrapping), `callMeBack` (pings the client's callback `count` times,
//! one at a time), and `sink()` (a new `Sink` counting the bytes streamed
//! into it with `write`, until `done()`).
//!
//! Everything runs on one event-loop thread (`#[actix::main]`), with a
//! hand-written accept loop; or, with `--workers N`, on a
//! `capnp_actix::Server` with N worker threads (accepting on the main
//! thread). A connection that fails ends alone, logged on stderr; the
//! server runs until killed. It installs no signal handler: SIGTERM's default action ends the
//! process at once, as the contract requires.
//!
//! Run it with the benchmark runner (see `bench/impls.json`), or by hand:
//! `cargo run --release --example bench-server -- 127.0.0.1:0`.

// The server uses the generated code and `split_host_port` of the shared
// module, not the client's helpers.
#[allow(dead_code)]
mod bench;

// The generated code names its types `crate::bench_capnp::...`.
use bench::bench_capnp;
use bench_capnp::{bench as bench_if, callback, sink};
use capnp_actix::{Capability, ConnActor, ConnOptions, Endpoint, ErrorKind, Server, Watch};
use std::future::Future;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

/// One `Bench` object. It holds no state, but every connection (and every
/// `next()`) gets its own, as the contract asks.
struct BenchImpl;

impl bench_if::Server for BenchImpl {
    async fn echo(
        self: Rc<Self>,
        params: bench_if::EchoParams,
        mut results: bench_if::EchoResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_data(params.get()?.get_data()?);
        Ok(())
    }

    async fn noop(
        self: Rc<Self>,
        _: bench_if::NoopParams,
        _: bench_if::NoopResults,
    ) -> Result<(), capnp::Error> {
        Ok(())
    }

    async fn next(
        self: Rc<Self>,
        _: bench_if::NextParams,
        mut results: bench_if::NextResults,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .set_next(capnp_actix::new_client::<bench_if::Client, _>(BenchImpl));
        Ok(())
    }

    async fn add(
        self: Rc<Self>,
        params: bench_if::AddParams,
        mut results: bench_if::AddResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        results
            .get()
            .set_sum(params.get_a().wrapping_add(params.get_b()));
        Ok(())
    }

    async fn sink(
        self: Rc<Self>,
        _: bench_if::SinkParams,
        mut results: bench_if::SinkResults,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .set_sink(capnp_actix::new_client::<sink::Client, _>(SinkImpl(
                std::cell::Cell::new(0),
            )));
        Ok(())
    }

    async fn call_me_back(
        self: Rc<Self>,
        params: bench_if::CallMeBackParams,
        _: bench_if::CallMeBackResults,
    ) -> Result<(), capnp::Error> {
        let (callback, count): (callback::Client, u32) = {
            let params = params.get()?;
            (params.get_callback()?, params.get_count())
        };
        drop(params);
        // One ping at a time; the first error is this call's error.
        for _ in 0..count {
            callback.ping_request().send().promise.await?;
        }
        Ok(())
    }
}

/// A `Sink`: counts the bytes written to it.
struct SinkImpl(std::cell::Cell<u64>);

impl sink::Server for SinkImpl {
    async fn write(self: Rc<Self>, params: sink::WriteParams) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        if data.is_empty() {
            return Err(capnp::Error::failed("an empty write".into()));
        }
        self.0.set(self.0.get() + data.len() as u64);
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: sink::DoneParams,
        mut results: sink::DoneResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_bytes(self.0.get());
        Ok(())
    }
}

/// Logs on stderr why `conn` ended, unless the peer simply went away.
///
/// The `Watch` is queued at once, before the connection's actor first runs,
/// so that it is registered even when the connection fails right away.
fn log_end(conn: &actix::Addr<ConnActor>) -> impl Future<Output = ()> {
    let watch = conn.send(Watch);
    async move {
        let Ok(ended) = watch.await else {
            return;
        };
        if let Ok(why) = ended.await {
            if why.kind() != ErrorKind::Disconnected {
                eprintln!("bench-server: connection ended: {why}");
            }
        }
    }
}

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (workers, addr) = match args.as_slice() {
        [addr] => (None, addr.clone()),
        [flag, n, addr] if flag == "--workers" => match n.parse::<usize>() {
            Ok(n) if n > 0 => (Some(n), addr.clone()),
            _ => usage(&format!("expected a number of workers, got {n:?}")),
        },
        _ => usage("expected [--workers N] HOST:PORT"),
    };
    let host = match bench::split_host_port(&addr) {
        Some((host, _)) => host.to_string(),
        None => usage(&format!("expected HOST:PORT, got {addr:?}")),
    };
    match workers {
        None => serve_here(&addr, &host).await,
        Some(workers) => serve_on_workers(&addr, &host, workers).await,
    }
}

/// Prints the contract's `listening HOST:PORT` line.
fn announce(host: &str, port: u16) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening {host}:{port}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(1);
    }
}

/// The `Server`, with its connections on `workers` worker threads (the
/// accept loop stays on the main thread).
async fn serve_on_workers(addr: &str, host: &str, workers: usize) {
    let server = Server::builder()
        .listen(addr)
        .unwrap_or_else(|e| usage(&e.to_string()))
        .workers(workers)
        .bootstrap_factory(|_| Capability::from_server::<bench_if::Client, _>(BenchImpl))
        .start()
        .await
        .unwrap_or_else(|e| {
            eprintln!("bench-server: {e}");
            std::process::exit(1);
        });
    let port = match &server.endpoints()[0] {
        Endpoint::Tcp(bound) => bench::split_host_port(bound).map(|(_, port)| port),
        Endpoint::Unix(_) => None,
    };
    announce(host, port.unwrap_or(0));
    server.stopped().await;
}

/// Everything on this one thread, with a hand-written accept loop.
async fn serve_here(addr: &str, host: &str) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("bench-server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let port = match listener.local_addr() {
        Ok(local) => local.port(),
        Err(e) => {
            eprintln!("bench-server: cannot read the bound port: {e}");
            std::process::exit(1);
        }
    };
    announce(host, port);

    // A fresh Bench for every connection; the factory runs on the
    // connection's arbiter (here, the only one).
    let options = ConnOptions::new()
        .bootstrap_factory(|| Capability::from_server::<bench_if::Client, _>(BenchImpl));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // `from_tcp` sets TCP_NODELAY.
                let conn = ConnActor::from_tcp(stream, options.clone());
                actix::spawn(log_end(&conn));
            }
            Err(e) => {
                // Such as EMFILE: keep serving the connections we have.
                eprintln!("bench-server: accept failed: {e}");
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("bench-server: {problem}\nusage: bench-server [--workers N] HOST:PORT");
    std::process::exit(2);
}
