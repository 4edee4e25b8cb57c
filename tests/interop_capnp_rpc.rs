//! Wire interop with the Rust reference implementation, capnp-rpc 0.27, over
//! loopback TCP, in both directions:
//!
//! - `ours_to_capnp_rpc_*`: a capnp-actix client (`ConnActor::from_tcp` and
//!   `Bootstrap`) calls a capnp-rpc server (`RpcTestImpl` below);
//! - `capnp_rpc_to_ours_*`: a capnp-rpc client calls a capnp-actix server
//!   (`support::TestImpl`).
//!
//! capnp-rpc runs on a thread of its own (a current-thread tokio runtime and
//! a `LocalSet`), capnp-actix in an `actix::System` on the test thread. Each
//! scenario is one async function run in both directions: `Ctx` gives it
//! the remote `Test`, the server's `Tally`, and a way to host objects on the
//! client's side with the client's own runtime.

mod support;

use capnp::capability::FromServer;
use capnp_actix::{Bootstrap, Capability, Close, ConnActor, ConnOptions, Stats, Watch};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
// The generated code names its types `crate::test_capnp::...`.
use support::test_capnp;
use support::{echo, eventually, CounterImpl, SequencerImpl, TailCallerImpl, Tally, TestImpl};
use test_capnp::{counter, pair, sequencer, test, FailureKind};
use tokio::time::{sleep, timeout};

/// How long one scenario may take, on either side.
const LIMIT: Duration = Duration::from_secs(20);

/// How long a side may take to shut down once the scenario is over.
const SHUTDOWN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

// covers: P-01, P-02, W-01, W-04
#[test]
fn ours_to_capnp_rpc_bootstrap_and_echo() {
    ours_to_capnp_rpc(bootstrap_and_echo);
}

// covers: P-01, P-02, W-01, W-04
#[test]
fn capnp_rpc_to_ours_bootstrap_and_echo() {
    capnp_rpc_to_ours(bootstrap_and_echo);
}

// covers: P-02
#[test]
fn ours_to_capnp_rpc_exceptions() {
    ours_to_capnp_rpc(exceptions);
}

// covers: P-02
#[test]
fn capnp_rpc_to_ours_exceptions() {
    capnp_rpc_to_ours(exceptions);
}

// covers: P-02, P-06, P-12, T-04
#[test]
fn ours_to_capnp_rpc_capabilities_in_params_and_results() {
    ours_to_capnp_rpc(capabilities_in_params_and_results);
}

// covers: P-02, P-06, P-12, T-04
#[test]
fn capnp_rpc_to_ours_capabilities_in_params_and_results() {
    capnp_rpc_to_ours(capabilities_in_params_and_results);
}

// covers: P-03, P-04
#[test]
fn ours_to_capnp_rpc_pipelining() {
    ours_to_capnp_rpc(pipelining);
}

// covers: P-03, P-04
#[test]
fn capnp_rpc_to_ours_pipelining() {
    capnp_rpc_to_ours(pipelining);
}

// covers: P-05, P-06, T-04
#[test]
fn ours_to_capnp_rpc_release() {
    ours_to_capnp_rpc(release);
}

// covers: P-05, P-06, T-04
#[test]
fn capnp_rpc_to_ours_release() {
    capnp_rpc_to_ours(release);
}

// covers: P-07
#[test]
fn ours_to_capnp_rpc_cancellation() {
    ours_to_capnp_rpc(cancellation);
}

// covers: P-07
#[test]
fn capnp_rpc_to_ours_cancellation() {
    capnp_rpc_to_ours(cancellation);
}

// covers: P-11, P-12
#[test]
fn ours_to_capnp_rpc_embargo() {
    ours_to_capnp_rpc(embargo);
}

// covers: P-11, P-12
#[test]
fn capnp_rpc_to_ours_embargo() {
    capnp_rpc_to_ours(embargo);
}

// covers: P-10
#[test]
fn ours_to_capnp_rpc_promise_resolution() {
    ours_to_capnp_rpc(promise_resolution);
}

// covers: P-10
#[test]
fn capnp_rpc_to_ours_promise_resolution() {
    capnp_rpc_to_ours(promise_resolution);
}

// covers: W-01, W-02
#[test]
fn ours_to_capnp_rpc_large_message() {
    ours_to_capnp_rpc(large_message);
}

// covers: W-01, W-02
#[test]
fn capnp_rpc_to_ours_large_message() {
    capnp_rpc_to_ours(large_message);
}

async fn bootstrap_and_echo(ctx: Ctx) {
    assert_eq!(echo(&ctx.test, "hello, interop").await, "hello, interop");
    assert_eq!(echo(&ctx.test, "").await, "");
    assert_eq!(echo(&ctx.test, "ünïcødé ✓").await, "ünïcødé ✓");
}

async fn exceptions(ctx: Ctx) {
    for (kind, expected) in [
        (FailureKind::Failed, capnp::ErrorKind::Failed),
        (FailureKind::Overloaded, capnp::ErrorKind::Overloaded),
        (FailureKind::Disconnected, capnp::ErrorKind::Disconnected),
        (FailureKind::Unimplemented, capnp::ErrorKind::Unimplemented),
    ] {
        let reason = format!("{expected:?} on purpose: ünïcødé");
        let mut req = ctx.test.fail_request();
        req.get().set_kind(kind);
        req.get().set_reason(reason.as_str());
        let err = req.send().promise.await.err().expect("fail must fail");
        assert_eq!(err.kind, expected, "{}: {err}", ctx.direction());
        assert!(
            err.extra.contains(&reason),
            "{}: the reason is lost: {err}",
            ctx.direction()
        );
    }
    // Failed calls, even `disconnected` ones, leave the connection working.
    assert_eq!(echo(&ctx.test, "still here").await, "still here");
}

async fn capabilities_in_params_and_results(ctx: Ctx) {
    // A server object in results.
    let theirs = new_counter(&ctx.test, 5).await;
    assert_eq!(increment(&theirs, 1).await, 6);
    // A client object in params comes back in results: it is the same
    // object, and calls on either reference reach it.
    let mine: counter::Client = ctx.local.host(CounterImpl::new(100, &ctx.local.tally));
    let echoed = echo_cap(&ctx.test, mine.clone()).await;
    assert_eq!(increment(&echoed, 1).await, 101);
    assert_eq!(increment(&mine, 1).await, 102);
    assert_eq!(increment(&echoed, 1).await, 103);
    // A server object sent back to its server and returned again.
    let again = echo_cap(&ctx.test, theirs.clone()).await;
    assert_eq!(increment(&again, 1).await, 7);
    assert_eq!(increment(&theirs, 1).await, 8);
    // The server let go of our counter (params and results released).
    drop((mine, echoed));
    let local = ctx.local.tally.counters.clone();
    eventually("our counter is released", SHUTDOWN, || {
        local.load(Ordering::SeqCst) == 0
    })
    .await;
}

async fn pipelining(ctx: Ctx) {
    // Calls on a counter whose creating call has not returned yet.
    let mut req = ctx.test.new_counter_request();
    req.get().set_start(40);
    let made = req.send();
    let counter = made.pipeline.get_counter();
    let first = increment_request(&counter, 1).send();
    let second = increment_request(&counter, 1).send();
    assert_eq!(first.promise.await.unwrap().get().unwrap().get_value(), 41);
    assert_eq!(second.promise.await.unwrap().get().unwrap().get_value(), 42);
    made.promise.await.unwrap();
    // Through a struct in the results: the null `right` fails that call
    // only, `left` works.
    let nested = ctx.test.nested_request().send();
    let pair: pair::Pipeline = nested.pipeline.get_pair();
    let right = pair.get_right().get_request().send().promise.await;
    assert!(
        right.is_err(),
        "{}: a call on a null capability must fail",
        ctx.direction()
    );
    let left = pair.get_left().get_request().send().promise.await.unwrap();
    assert_eq!(left.get().unwrap().get_value(), 10);
    nested.promise.await.unwrap();
    assert_eq!(echo(&ctx.test, "after").await, "after");
}

async fn release(ctx: Ctx) {
    let live = ctx.server.counters.clone();
    // A returned counter, received twice (its second copy comes back from
    // echoCap), then dropped.
    let counter = new_counter(&ctx.test, 0).await;
    let copy = echo_cap(&ctx.test, counter.clone()).await;
    assert_eq!(increment(&copy, 2).await, 2);
    assert_eq!(live.load(Ordering::SeqCst), 1);
    drop((counter, copy));
    let l = live.clone();
    eventually("the returned counter is released", SHUTDOWN, || {
        l.load(Ordering::SeqCst) == 0
    })
    .await;
    // A counter only ever used through the pipeline.
    let mut req = ctx.test.new_counter_request();
    req.get().set_start(1);
    let made = req.send();
    let inc = increment_request(&made.pipeline.get_counter(), 1).send();
    assert_eq!(inc.promise.await.unwrap().get().unwrap().get_value(), 2);
    assert_eq!(live.load(Ordering::SeqCst), 1);
    drop(made);
    let l = live.clone();
    eventually("the pipelined counter is released", SHUTDOWN, || {
        l.load(Ordering::SeqCst) == 0
    })
    .await;
    // Our connection holds nothing but the bootstrap capability now (a
    // capnp-rpc client calls it through its bootstrap question and releases
    // the import, so our server may export nothing at all).
    let stats = ctx.ours.send(Stats).await.unwrap();
    match ctx.local.runtime {
        Runtime::Actix => assert_eq!(stats.imports, 1, "{stats:?}"),
        Runtime::CapnpRpc => assert!(stats.exports <= 1, "{stats:?}"),
    }
}

async fn cancellation(ctx: Ctx) {
    let hung = ctx.test.hang_request().send();
    // An answered echo sent after it: the server has started `hang`.
    assert_eq!(echo(&ctx.test, "after hang").await, "after hang");
    sleep(Duration::from_millis(20)).await;
    assert_eq!(cancellations(&ctx.test).await, 0);
    drop(hung);
    let deadline = Instant::now() + SHUTDOWN;
    while cancellations(&ctx.test).await != 1 {
        assert!(
            Instant::now() < deadline,
            "{}: the server never cancelled `hang`",
            ctx.direction()
        );
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ctx.server.cancellations.load(Ordering::SeqCst), 1);
}

async fn embargo(ctx: Ctx) {
    let seq: sequencer::Client = ctx.local.host(SequencerImpl::new());
    // Calls through the promised result travel to the server and back.
    let mut req = ctx.test.echo_seq_request();
    req.get().set_seq(seq);
    let echoed = req.send();
    let promised = echoed.pipeline.get_seq();
    let mut calls: Vec<_> = (0..20).map(|i| next(&promised, i)).collect();
    // Once the Return is in, the promise resolves to our own object: new
    // calls must not overtake the ones still in flight.
    echoed.promise.await.unwrap();
    calls.extend((20..60).map(|i| next(&promised, i)));
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call
            .promise
            .await
            .unwrap_or_else(|e| panic!("{}: call {i}: {e}", ctx.direction()));
        assert_eq!(reply.get().unwrap().get_n(), i as u32);
    }
    assert_eq!(
        next(&promised, 60)
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_n(),
        60
    );
    if ctx.local.runtime == Runtime::Actix {
        let stats = ctx.ours.send(Stats).await.unwrap();
        assert_eq!(stats.embargoes_started, 1, "{stats:?}");
    }
}

async fn promise_resolution(ctx: Ctx) {
    // A counter that exists only after 200 ms: send its promise now.
    let factory = ctx.local.test();
    let mut req = factory.delayed_counter_request();
    req.get().set_millis(200);
    req.get().set_start(7);
    let later = req.send();
    let mut req = ctx.test.hold_request();
    req.get().set_cap(later.pipeline.get_counter());
    req.send().promise.await.unwrap();
    // The counter does not exist yet: a call the server makes on the
    // promise before it settles waits for it.
    assert_eq!(ctx.local.tally.counters.load(Ordering::SeqCst), 0);
    let before = call_held(&ctx.test, 1);
    assert_eq!(before.await, 8);
    later.promise.await.unwrap();
    // And after it settled.
    assert_eq!(call_held(&ctx.test, 1).await, 9);
    assert_eq!(call_held(&ctx.test, 1).await, 10);
    let stats = ctx.ours.send(Stats).await.unwrap();
    match ctx.local.runtime {
        Runtime::Actix => assert_eq!(stats.resolves_sent, 1, "{stats:?}"),
        Runtime::CapnpRpc => assert_eq!(stats.resolves_received, 1, "{stats:?}"),
    }
    ctx.test
        .release_held_request()
        .send()
        .promise
        .await
        .unwrap();
    drop((later.pipeline, factory));
    let local = ctx.local.tally.counters.clone();
    eventually("the resolved counter is released", SHUTDOWN, || {
        local.load(Ordering::SeqCst) == 0
    })
    .await;
}

async fn large_message(ctx: Ctx) {
    let data: Vec<u8> = (0..5usize << 20).map(|i| (i % 251) as u8).collect();
    let mut req = ctx.test.blob_request();
    req.get().set_data(&data);
    let reply = req.send().promise.await.unwrap();
    let reply = reply.get().unwrap();
    assert_eq!(reply.get_size(), data.len() as u64);
    assert!(
        reply.get_data().unwrap() == data.as_slice(),
        "the data differs"
    );
    assert_eq!(echo(&ctx.test, "after the blob").await, "after the blob");
}

// ---------------------------------------------------------------------------
// Call helpers
// ---------------------------------------------------------------------------

async fn new_counter(test: &test::Client, start: i64) -> counter::Client {
    let mut req = test.new_counter_request();
    req.get().set_start(start);
    let reply = req.send().promise.await.unwrap();
    reply.get().unwrap().get_counter().unwrap()
}

async fn echo_cap(test: &test::Client, cap: counter::Client) -> counter::Client {
    let mut req = test.echo_cap_request();
    req.get().set_cap(cap);
    let reply = req.send().promise.await.unwrap();
    reply.get().unwrap().get_cap().unwrap()
}

fn increment_request(
    counter: &counter::Client,
    by: i64,
) -> capnp::capability::Request<counter::increment_params::Owned, counter::increment_results::Owned>
{
    let mut req = counter.increment_request();
    req.get().set_by(by);
    req
}

async fn increment(counter: &counter::Client, by: i64) -> i64 {
    let reply = increment_request(counter, by).send().promise.await.unwrap();
    reply.get().unwrap().get_value()
}

fn next(
    seq: &sequencer::Client,
    expected: u32,
) -> capnp::capability::RemotePromise<sequencer::next_results::Owned> {
    let mut req = seq.next_request();
    req.get().set_expected(expected);
    req.send()
}

async fn call_held(test: &test::Client, by: i64) -> i64 {
    let mut req = test.call_held_request();
    req.get().set_by(by);
    let reply = req.send().promise.await.unwrap();
    reply.get().unwrap().get_value()
}

async fn cancellations(test: &test::Client) -> u32 {
    let reply = test.cancellations_request().send().promise.await.unwrap();
    reply.get().unwrap().get_count()
}

// ---------------------------------------------------------------------------
// The two directions
// ---------------------------------------------------------------------------

/// Which runtime hosts the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Actix,
    CapnpRpc,
}

/// Hosts objects on the client's side, with the client's runtime.
struct Local {
    runtime: Runtime,
    /// Counters and cancellations of the client's own objects.
    tally: Tally,
}

impl Local {
    fn host<C, S>(&self, server: S) -> C
    where
        C: FromServer<S>,
        S: 'static,
    {
        match self.runtime {
            Runtime::Actix => capnp_actix::new_client(server),
            Runtime::CapnpRpc => capnp_rpc::new_client(server),
        }
    }

    /// A `Test` object of the client's own (for `delayedCounter`).
    fn test(&self) -> test::Client {
        match self.runtime {
            Runtime::Actix => capnp_actix::new_client(TestImpl::new(&self.tally)),
            Runtime::CapnpRpc => capnp_rpc::new_client(RpcTestImpl::new(&self.tally)),
        }
    }
}

/// What a scenario gets.
struct Ctx {
    /// The server's bootstrap `Test`, reached over TCP.
    test: test::Client,
    /// What the server's objects count.
    server: Tally,
    /// The client's side.
    local: Local,
    /// capnp-actix's end of the connection (client or server).
    ours: actix::Addr<ConnActor>,
}

impl Ctx {
    fn direction(&self) -> &'static str {
        match self.local.runtime {
            Runtime::Actix => "capnp-actix client, capnp-rpc server",
            Runtime::CapnpRpc => "capnp-rpc client, capnp-actix server",
        }
    }
}

/// A capnp-rpc connection over `stream`.
fn rpc_system(
    stream: tokio::net::TcpStream,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> RpcSystem<Side> {
    stream.set_nodelay(true).unwrap();
    let (reader, writer) = tokio_util::compat::TokioAsyncReadCompatExt::compat(stream).split();
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader),
        futures::io::BufWriter::new(writer),
        side,
        Default::default(),
    );
    RpcSystem::new(Box::new(network), bootstrap)
}

/// A thread running capnp-rpc: a current-thread tokio runtime and a
/// `LocalSet`, as capnp-rpc wants.
struct RpcThread {
    handle: std::thread::JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

impl RpcThread {
    fn spawn<F, Fut>(body: F) -> RpcThread
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (done_tx, done) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tokio::task::LocalSet::new().block_on(&rt, async move {
                if timeout(LIMIT, body()).await.is_err() {
                    panic!("the capnp-rpc side timed out");
                }
            });
            let _ = done_tx.send(());
        });
        RpcThread { handle, done }
    }

    /// Waits, without blocking the actix system, for the thread to end
    /// within `limit`, and passes on its panic if it had one.
    async fn join(self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.done.try_recv() {
                Ok(()) | Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) if Instant::now() > deadline => {
                    panic!("{what} did not finish")
                }
                Err(mpsc::TryRecvError::Empty) => sleep(Duration::from_millis(5)).await,
            }
        }
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Direction A: a capnp-actix client against a capnp-rpc server.
fn ours_to_capnp_rpc<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let server_tally = Tally::default();
    let (addr_tx, addr_rx) = mpsc::channel();
    let tally = server_tally.clone();
    let server = RpcThread::spawn(move || async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addr_tx.send(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let main: test::Client = capnp_rpc::new_client(RpcTestImpl::new(&tally));
        // Runs until the client closes the connection.
        let _ = rpc_system(stream, Side::Server, Some(main.client)).await;
    });
    let addr = addr_rx
        .recv_timeout(SHUTDOWN)
        .expect("the capnp-rpc server did not start");
    actix::System::new().block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = ConnActor::from_tcp(stream, ConnOptions::new());
        let test: test::Client = conn.send(Bootstrap).await.unwrap().unwrap().client();
        let ctx = Ctx {
            test,
            server: server_tally,
            local: Local {
                runtime: Runtime::Actix,
                tally: Tally::default(),
            },
            ours: conn.clone(),
        };
        timeout(LIMIT, scenario(ctx))
            .await
            .expect("the scenario timed out");
        conn.send(Close).await.unwrap();
        server.join("the capnp-rpc server", SHUTDOWN).await;
    });
}

/// Direction B: a capnp-rpc client against a capnp-actix server.
fn capnp_rpc_to_ours<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    actix::System::new().block_on(async move {
        let tally = Tally::default();
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn_tx, conn_rx) = futures::channel::oneshot::channel();
        let server = tally.clone();
        let client = RpcThread::spawn(move || async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut rpc = rpc_system(stream, Side::Client, None);
            let test: test::Client = rpc.bootstrap(Side::Server);
            let disconnector = rpc.get_disconnector();
            tokio::task::spawn_local(rpc);
            let ctx = Ctx {
                test,
                server,
                local: Local {
                    runtime: Runtime::CapnpRpc,
                    tally: Tally::default(),
                },
                ours: conn_rx.await.unwrap(),
            };
            scenario(ctx).await;
            disconnector.await.unwrap();
        });
        let (stream, _) = timeout(SHUTDOWN, listener.accept()).await.unwrap().unwrap();
        let conn = ConnActor::from_tcp(stream, ConnOptions::new().main_interface(main));
        let ended = conn.send(Watch).await.unwrap();
        conn_tx.send(conn).unwrap();
        client.join("the capnp-rpc client", LIMIT + SHUTDOWN).await;
        timeout(SHUTDOWN, ended)
            .await
            .expect("our server's connection did not end")
            .unwrap();
        let servers = tally.servers_dropped.clone();
        eventually("our main interface is dropped", SHUTDOWN, || {
            servers.load(Ordering::SeqCst) == 1
        })
        .await;
    });
}

// ---------------------------------------------------------------------------
// The capnp-rpc server of direction A
// ---------------------------------------------------------------------------

/// `Test` for capnp-rpc: like `support::TestImpl`, but its children are
/// capnp-rpc objects and it sleeps with tokio. Implements what the
/// scenarios use.
struct RpcTestImpl {
    tally: Tally,
    held: RefCell<Option<counter::Client>>,
}

impl RpcTestImpl {
    fn new(tally: &Tally) -> Self {
        RpcTestImpl {
            tally: tally.clone(),
            held: RefCell::new(None),
        }
    }
}

/// Counts a cancelled `hang` when its work is dropped.
struct CancelGuard(Arc<AtomicUsize>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl test::Server for RpcTestImpl {
    async fn echo(
        self: Rc<Self>,
        params: test::EchoParams,
        mut results: test::EchoResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_text(params.get()?.get_text()?);
        Ok(())
    }

    async fn fail(
        self: Rc<Self>,
        params: test::FailParams,
        _: test::FailResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let reason = p.get_reason()?.to_string()?;
        Err(match p.get_kind()? {
            FailureKind::Failed => capnp::Error::failed(reason),
            FailureKind::Overloaded => capnp::Error::overloaded(reason),
            FailureKind::Disconnected => capnp::Error::disconnected(reason),
            FailureKind::Unimplemented => capnp::Error::unimplemented(reason),
        })
    }

    async fn hang(
        self: Rc<Self>,
        _: test::HangParams,
        _: test::HangResults,
    ) -> Result<(), capnp::Error> {
        let _guard = CancelGuard(self.tally.cancellations.clone());
        futures::future::pending::<()>().await;
        Ok(())
    }

    async fn new_counter(
        self: Rc<Self>,
        params: test::NewCounterParams,
        mut results: test::NewCounterResults,
    ) -> Result<(), capnp::Error> {
        let start = params.get()?.get_start();
        let counter: counter::Client = capnp_rpc::new_client(CounterImpl::new(start, &self.tally));
        results.get().set_counter(counter);
        Ok(())
    }

    async fn echo_cap(
        self: Rc<Self>,
        params: test::EchoCapParams,
        mut results: test::EchoCapResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_cap(params.get()?.get_cap()?);
        Ok(())
    }

    async fn blob(
        self: Rc<Self>,
        params: test::BlobParams,
        mut results: test::BlobResults,
    ) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        let mut r = results.get();
        r.set_size(data.len() as u64);
        r.set_data(data);
        Ok(())
    }

    async fn hold(
        self: Rc<Self>,
        params: test::HoldParams,
        _: test::HoldResults,
    ) -> Result<(), capnp::Error> {
        *self.held.borrow_mut() = Some(params.get()?.get_cap()?);
        Ok(())
    }

    async fn call_held(
        self: Rc<Self>,
        params: test::CallHeldParams,
        mut results: test::CallHeldResults,
    ) -> Result<(), capnp::Error> {
        let held = self.held.borrow().clone();
        let held = held.ok_or_else(|| capnp::Error::failed("nothing held".into()))?;
        let mut req = held.increment_request();
        req.get().set_by(params.get()?.get_by());
        let reply = req.send().promise.await?;
        results.get().set_value(reply.get()?.get_value());
        Ok(())
    }

    async fn release_held(
        self: Rc<Self>,
        _: test::ReleaseHeldParams,
        _: test::ReleaseHeldResults,
    ) -> Result<(), capnp::Error> {
        self.held.borrow_mut().take();
        Ok(())
    }

    async fn echo_seq(
        self: Rc<Self>,
        params: test::EchoSeqParams,
        mut results: test::EchoSeqResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_seq(params.get()?.get_seq()?);
        Ok(())
    }

    async fn cancellations(
        self: Rc<Self>,
        _: test::CancellationsParams,
        mut results: test::CancellationsResults,
    ) -> Result<(), capnp::Error> {
        let count = self.tally.cancellations.load(Ordering::SeqCst);
        results.get().set_count(count as u32);
        Ok(())
    }

    async fn nested(
        self: Rc<Self>,
        _: test::NestedParams,
        mut results: test::NestedResults,
    ) -> Result<(), capnp::Error> {
        let left: counter::Client = capnp_rpc::new_client(CounterImpl::new(10, &self.tally));
        // `right` stays null on purpose.
        results.get().init_pair().set_left(left);
        Ok(())
    }

    async fn delayed_counter(
        self: Rc<Self>,
        params: test::DelayedCounterParams,
        mut results: test::DelayedCounterResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        sleep(Duration::from_millis(p.get_millis().into())).await;
        let counter: counter::Client =
            capnp_rpc::new_client(CounterImpl::new(p.get_start(), &self.tally));
        results.get().set_counter(counter);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Tail calls sent (P-13), back to a capnp-rpc client
// ---------------------------------------------------------------------------

/// capnp-rpc's callee: its params back, with a sequencer.
struct RpcCallee(sequencer::Client);

impl test_capnp::tail_callee::Server for RpcCallee {
    async fn foo(
        self: Rc<Self>,
        params: test_capnp::tail_callee::FooParams,
        mut results: test_capnp::tail_callee::FooResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let mut out = results.get();
        out.set_i(params.get_i() as u32);
        out.set_t(params.get_t()?);
        out.set_c(self.0.clone());
        Ok(())
    }
}

// covers: P-13
#[test]
fn a_tail_call_back_to_a_capnp_rpc_client_returns_its_callees_results() {
    // capnp-rpc hosts the callee: our tail call goes back to it with
    // sendResultsTo.yourself, which it supports, and our Return says
    // takeFromOtherQuestion.
    actix::System::new().block_on(async move {
        let main = Capability::from_server::<test_capnp::tail_caller::Client, _>(TailCallerImpl);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = mpsc::channel();
        let client = RpcThread::spawn(move || async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut rpc = rpc_system(stream, Side::Client, None);
            let caller: test_capnp::tail_caller::Client = rpc.bootstrap(Side::Server);
            let disconnector = rpc.get_disconnector();
            tokio::task::spawn_local(rpc);
            let sequencer: sequencer::Client = capnp_rpc::new_client(SequencerImpl::new());
            let callee: test_capnp::tail_callee::Client =
                capnp_rpc::new_client(RpcCallee(sequencer));
            let mut request = caller.foo_request();
            request.get().set_i(456);
            request.get().set_callee(callee);
            let promise = request.send();
            let mut next = promise.pipeline.get_c().next_request();
            next.get().set_expected(0);
            let dependent = next.send().promise;
            let response = promise.promise.await.unwrap();
            let results = response.get().unwrap();
            let i = results.get_i();
            let t = results.get_t().unwrap().to_string().unwrap();
            let n = dependent.await.unwrap().get().unwrap().get_n();
            seen_tx.send((i, t, n)).unwrap();
            disconnector.await.unwrap();
        });
        let (stream, _) = timeout(SHUTDOWN, listener.accept()).await.unwrap().unwrap();
        let conn = ConnActor::from_tcp(stream, ConnOptions::new().main_interface(main));
        let ended = conn.send(Watch).await.unwrap();
        client.join("the capnp-rpc client", LIMIT + SHUTDOWN).await;
        let (i, t, n) = seen_rx.try_recv().expect("the client saw the results");
        assert_eq!((i, t.as_str(), n), (456, "from TailCaller", 0));
        let _ = timeout(SHUTDOWN, ended).await;
    });
}

/// Calls made only to pipeline on (`onlyPromisePipeline`): capnp-rpc
/// ignores the hint and returns anyway, which is tolerated; the pipelined
/// calls work either way, and keep working after the hint is given up.
async fn pipeline_only(ctx: Ctx) {
    use capnp_actix::SendForPipeline;
    for start in [10, 20, 30] {
        let mut req = ctx.test.new_counter_request();
        req.get().set_start(start);
        let counter = req.send_for_pipeline().get_counter();
        let value = increment_request(&counter, 1).send().promise.await.unwrap();
        assert_eq!(value.get().unwrap().get_value(), start + 1);
    }
    echo(&ctx.test, "still connected").await;
}

// covers: P-14
#[test]
fn ours_to_capnp_rpc_calls_sent_only_to_pipeline_on() {
    ours_to_capnp_rpc(pipeline_only);
}
