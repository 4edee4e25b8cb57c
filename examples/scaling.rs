//! How a `capnp_actix::Server` scales over worker arbiters, and what a call
//! to a main interface shared across arbiters costs (BENCHMARKS.md,
//! "Services").
//!
//! - `scaling serve ADDR --workers N [--shared]`: serves `Work`
//!   (`schema/work.capnp`) on ADDR with N workers: a `Work` per connection
//!   made on its worker, or with `--shared` one `Work` for all, on the main
//!   thread. Prints `listening ADDR`.
//! - `scaling load ADDR CONNS INFLIGHT MICROS SECS`: CONNS connections, each
//!   keeping INFLIGHT `burn(MICROS)` calls going for SECS seconds (after a
//!   half-second warm-up); prints calls/s, the median latency, and the
//!   client's CPU time per call.
//! - `scaling bench REPS`: runs the server (a child process) with 1 and
//!   with 2 workers, interleaved, REPS times each, under 16 connections with
//!   2 calls in flight each, burning 100 µs per call; then the shared and
//!   the per-connection main interface with one worker, one connection,
//!   one call at a time, burning nothing. Prints the medians and ratios.
//!
//! Run it with `cargo run --release --example scaling -- bench 5`.

#[allow(dead_code, clippy::all)]
mod work_capnp {
    include!(concat!(env!("OUT_DIR"), "/work_capnp.rs"));
}

use capnp_actix::{Capability, Server};
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};
use work_capnp::work;

/// Burns CPU for the time asked.
struct WorkImpl;

impl work::Server for WorkImpl {
    async fn burn(
        self: Rc<Self>,
        params: work::BurnParams,
        mut results: work::BurnResults,
    ) -> Result<(), capnp::Error> {
        let wanted = Duration::from_micros(params.get()?.get_micros().into());
        let start = Instant::now();
        let mut spins = 0u64;
        while start.elapsed() < wanted {
            spins += 1;
            std::hint::spin_loop();
        }
        results.get().set_spins(spins);
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", addr, "--workers", n, rest @ ..] => {
            let workers = n.parse().unwrap_or_else(|_| usage());
            let shared = matches!(rest, ["--shared"]);
            actix::System::new().block_on(serve(addr, workers, shared));
        }
        ["load", addr, conns, inflight, micros, secs] => {
            let parse = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
            let result = actix::System::new().block_on(load(
                addr,
                parse(conns) as usize,
                parse(inflight) as usize,
                parse(micros) as u32,
                Duration::from_secs(parse(secs)),
            ));
            println!(
                "{:.0} calls/s, p50 {:.1} us, client CPU {:.1} us/call",
                result.calls_per_sec, result.p50_us, result.client_cpu_us
            );
        }
        ["bench", reps] => bench(reps.parse().unwrap_or_else(|_| usage())),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: scaling serve ADDR --workers N [--shared]\n       \
         scaling load ADDR CONNS INFLIGHT MICROS SECS\n       scaling bench REPS"
    );
    std::process::exit(2);
}

async fn serve(addr: &str, workers: usize, shared: bool) {
    let builder = Server::builder()
        .listen(addr)
        .unwrap_or_else(|_| usage())
        .workers(workers);
    let builder = if shared {
        builder.main_interface(Capability::from_server::<work::Client, _>(WorkImpl))
    } else {
        builder.bootstrap_factory(|_| Capability::from_server::<work::Client, _>(WorkImpl))
    };
    let server = builder.start().await.unwrap_or_else(|e| {
        eprintln!("scaling: {e}");
        std::process::exit(1)
    });
    println!("listening {}", server.endpoints()[0]);
    server.stopped().await;
}

/// What a load run measured.
struct Load {
    calls_per_sec: f64,
    p50_us: f64,
    client_cpu_us: f64,
}

/// This process's CPU time so far (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

async fn load(addr: &str, conns: usize, inflight: usize, micros: u32, secs: Duration) -> Load {
    let mut clients = Vec::new();
    for _ in 0..conns {
        let (conn, work) = capnp_actix::connect::<work::Client>(addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("scaling: {e}");
                std::process::exit(1)
            });
        clients.push((conn, work));
    }
    let latencies: Rc<RefCell<Vec<u32>>> = Rc::default();
    let measuring = Rc::new(std::cell::Cell::new(false));
    let running = Rc::new(std::cell::Cell::new(true));
    let mut tasks = Vec::new();
    for (_, work) in &clients {
        for _ in 0..inflight {
            let (work, latencies, measuring, running) = (
                work.clone(),
                latencies.clone(),
                measuring.clone(),
                running.clone(),
            );
            tasks.push(actix_rt::spawn(async move {
                while running.get() {
                    let start = Instant::now();
                    let mut request = work.burn_request();
                    request.get().set_micros(micros);
                    if request.send().promise.await.is_err() {
                        return;
                    }
                    if measuring.get() {
                        latencies
                            .borrow_mut()
                            .push(start.elapsed().as_micros() as u32);
                    }
                }
            }));
        }
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let (started, cpu) = (Instant::now(), cpu_time());
    measuring.set(true);
    actix_rt::time::sleep(secs).await;
    measuring.set(false);
    let (elapsed, cpu) = (started.elapsed(), cpu_time() - cpu);
    running.set(false);
    for task in tasks {
        let _ = task.await;
    }
    for (conn, _) in clients {
        conn.close().await;
    }
    let mut latencies = latencies.take();
    latencies.sort_unstable();
    let calls = latencies.len().max(1) as f64;
    Load {
        calls_per_sec: calls / elapsed.as_secs_f64(),
        p50_us: latencies.get(latencies.len() / 2).copied().unwrap_or(0) as f64,
        client_cpu_us: cpu.as_secs_f64() * 1e6 / calls,
    }
}

/// A server child process, killed when dropped.
struct Child(std::process::Child, String);

impl Child {
    fn start(workers: usize, shared: bool) -> Child {
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command.args(["serve", "127.0.0.1:0", "--workers", &workers.to_string()]);
        if shared {
            command.arg("--shared");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("its first line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening ADDR")
            .to_string();
        Child(child, addr)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench(reps: usize) {
    let system = actix::System::new();
    let (mut one, mut two, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        for (workers, into) in [(1, &mut one), (2, &mut two)] {
            let server = Child::start(workers, false);
            let result = system.block_on(load(&server.1, 16, 2, 100, Duration::from_secs(3)));
            println!(
                "rep {rep}: {workers} worker(s): {:.0} calls/s (client CPU {:.1} us/call)",
                result.calls_per_sec, result.client_cpu_us
            );
            into.push(result.calls_per_sec);
            cpu.push(result.client_cpu_us);
        }
    }
    let (one, two) = (median(one), median(two));
    println!(
        "scaling, burn(100 us), 16 connections x 2 in flight: 1 worker {one:.0} calls/s, \
         2 workers {two:.0} calls/s, ratio {:.2} (client CPU {:.1} us/call)",
        two / one,
        median(cpu)
    );
    let (mut own, mut shared) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        for (is_shared, into) in [(false, &mut own), (true, &mut shared)] {
            let server = Child::start(1, is_shared);
            let result = system.block_on(load(&server.1, 1, 1, 0, Duration::from_secs(2)));
            into.push(result.p50_us);
        }
    }
    let (own, shared) = (median(own), median(shared));
    println!(
        "one call at a time, burn(0), 1 worker: per-connection object p50 {own:.1} us, \
         shared main interface (another arbiter) p50 {shared:.1} us: +{:.1} us per call",
        shared - own
    );
}
