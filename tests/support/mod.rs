//! Shared pieces of the integration tests: the generated test schema, a
//! server for its `Test` interface, and ways to reach that server locally,
//! through an in-memory connection pair, and over TCP.
#![allow(dead_code)]

pub mod raw;

#[allow(dead_code, clippy::all)]
pub mod test_capnp {
    include!(concat!(env!("OUT_DIR"), "/test_capnp.rs"));
}

use capnp::capability::FromClientHook;
use capnp_actix::{Bootstrap, Capability, ConnActor, ConnOptions};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use test_capnp::{callback, counter, pair, sequencer, test, FailureKind};

/// Live counters, shared with the test that made the server.
#[derive(Clone, Default)]
pub struct Tally {
    /// Counters alive right now.
    pub counters: Arc<AtomicUsize>,
    /// `hang` calls whose work was dropped before completing.
    pub cancellations: Arc<AtomicUsize>,
    /// Test servers dropped.
    pub servers_dropped: Arc<AtomicUsize>,
}

pub struct CounterImpl {
    value: Cell<i64>,
    tally: Tally,
}

impl CounterImpl {
    pub fn new(start: i64, tally: &Tally) -> Self {
        tally.counters.fetch_add(1, Ordering::SeqCst);
        CounterImpl {
            value: Cell::new(start),
            tally: tally.clone(),
        }
    }
}

impl Drop for CounterImpl {
    fn drop(&mut self) {
        self.tally.counters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl counter::Server for CounterImpl {
    async fn increment(
        self: Rc<Self>,
        params: counter::IncrementParams,
        mut results: counter::IncrementResults,
    ) -> Result<(), capnp::Error> {
        let by = params.get()?.get_by();
        self.value.set(self.value.get() + by);
        results.get().set_value(self.value.get());
        Ok(())
    }

    async fn get(
        self: Rc<Self>,
        _: counter::GetParams,
        mut results: counter::GetResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_value(self.value.get());
        Ok(())
    }
}

pub struct SequencerImpl {
    count: Cell<u32>,
}

impl SequencerImpl {
    pub fn new() -> Self {
        SequencerImpl {
            count: Cell::new(0),
        }
    }
}

impl SequencerImpl {
    /// How many calls it received.
    pub fn count(&self) -> u32 {
        self.count.get()
    }
}

impl Default for SequencerImpl {
    fn default() -> Self {
        Self::new()
    }
}

impl sequencer::Server for SequencerImpl {
    async fn next(
        self: Rc<Self>,
        params: sequencer::NextParams,
        mut results: sequencer::NextResults,
    ) -> Result<(), capnp::Error> {
        let expected = params.get()?.get_expected();
        let n = self.count.get();
        self.count.set(n + 1);
        if n != expected {
            return Err(capnp::Error::failed(format!(
                "call {expected} arrived as number {n}"
            )));
        }
        results.get().set_n(n);
        Ok(())
    }
}

/// Counts the calls it sees and can call back into a capability.
pub struct CallbackImpl {
    /// Called during `call`, to prove a handler can call back.
    pub test: Option<test::Client>,
}

impl callback::Server for CallbackImpl {
    async fn call(
        self: Rc<Self>,
        params: callback::CallParams,
        mut results: callback::CallResults,
    ) -> Result<(), capnp::Error> {
        let value = params.get()?.get_value();
        let mut add = 0;
        if let Some(test) = &self.test {
            let mut req = test.echo_request();
            req.get().set_text("from the callback");
            let reply = req.send().promise.await?;
            add = reply.get()?.get_text()?.to_str()?.len() as i64;
        }
        results.get().set_result(value * 2 + add);
        Ok(())
    }
}

pub struct TestImpl {
    tally: Tally,
    held: RefCell<Option<counter::Client>>,
    held_seq: RefCell<Option<sequencer::Client>>,
}

impl TestImpl {
    pub fn new(tally: &Tally) -> Self {
        TestImpl {
            tally: tally.clone(),
            held: RefCell::new(None),
            held_seq: RefCell::new(None),
        }
    }
}

impl Drop for TestImpl {
    fn drop(&mut self) {
        self.tally.servers_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Increments a counter when dropped: the work of a cancelled call.
struct CancelGuard(Arc<AtomicUsize>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl test::Server for TestImpl {
    async fn echo(
        self: Rc<Self>,
        params: test::EchoParams,
        mut results: test::EchoResults,
    ) -> Result<(), capnp::Error> {
        let text = params.get()?.get_text()?.to_str()?.to_string();
        results.get().set_text(text.as_str());
        Ok(())
    }

    async fn fail(
        self: Rc<Self>,
        params: test::FailParams,
        _: test::FailResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let reason = p.get_reason()?.to_str()?.to_string();
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
        let guard = CancelGuard(self.tally.cancellations.clone());
        futures::future::pending::<()>().await;
        drop(guard);
        Ok(())
    }

    async fn new_counter(
        self: Rc<Self>,
        params: test::NewCounterParams,
        mut results: test::NewCounterResults,
    ) -> Result<(), capnp::Error> {
        let start = params.get()?.get_start();
        let counter: counter::Client =
            capnp_actix::new_client(CounterImpl::new(start, &self.tally));
        results.get().set_counter(counter);
        Ok(())
    }

    async fn echo_cap(
        self: Rc<Self>,
        params: test::EchoCapParams,
        mut results: test::EchoCapResults,
    ) -> Result<(), capnp::Error> {
        let cap = params.get()?.get_cap()?;
        results.get().set_cap(cap);
        Ok(())
    }

    async fn call_back(
        self: Rc<Self>,
        params: test::CallBackParams,
        mut results: test::CallBackResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let cb = p.get_cb()?;
        let mut req = cb.call_request();
        req.get().set_value(p.get_value());
        let reply = req.send().promise.await?;
        results.get().set_result(reply.get()?.get_result());
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
        let Some(held) = held else {
            return Err(capnp::Error::failed("nothing held".into()));
        };
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

    async fn sequencer(
        self: Rc<Self>,
        _: test::SequencerParams,
        mut results: test::SequencerResults,
    ) -> Result<(), capnp::Error> {
        let seq: sequencer::Client = capnp_actix::new_client(SequencerImpl {
            count: Cell::new(0),
        });
        results.get().set_seq(seq);
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
        results
            .get()
            .set_count(self.tally.cancellations.load(Ordering::SeqCst) as u32);
        Ok(())
    }

    async fn nested(
        self: Rc<Self>,
        _: test::NestedParams,
        mut results: test::NestedResults,
    ) -> Result<(), capnp::Error> {
        let left: counter::Client = capnp_actix::new_client(CounterImpl::new(10, &self.tally));
        let mut pair: pair::Builder = results.get().init_pair();
        pair.set_left(left);
        // `right` stays null on purpose.
        Ok(())
    }

    async fn delayed_seq(
        self: Rc<Self>,
        params: test::DelayedSeqParams,
        mut results: test::DelayedSeqResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let seq = p.get_seq()?;
        actix_rt::time::sleep(Duration::from_millis(p.get_millis().into())).await;
        results.get().set_seq(seq);
        Ok(())
    }

    async fn hold_seq(
        self: Rc<Self>,
        params: test::HoldSeqParams,
        _: test::HoldSeqResults,
    ) -> Result<(), capnp::Error> {
        *self.held_seq.borrow_mut() = Some(params.get()?.get_seq()?);
        Ok(())
    }

    async fn call_held_seq(
        self: Rc<Self>,
        params: test::CallHeldSeqParams,
        mut results: test::CallHeldSeqResults,
    ) -> Result<(), capnp::Error> {
        let held = self.held_seq.borrow().clone();
        let Some(held) = held else {
            return Err(capnp::Error::failed("no sequencer held".into()));
        };
        let mut req = held.next_request();
        req.get().set_expected(params.get()?.get_expected());
        let reply = req.send().promise.await?;
        results.get().set_n(reply.get()?.get_n());
        Ok(())
    }

    async fn live_counters(
        self: Rc<Self>,
        _: test::LiveCountersParams,
        mut results: test::LiveCountersResults,
    ) -> Result<(), capnp::Error> {
        let count = self.tally.counters.load(Ordering::SeqCst) as u32;
        results.get().set_count(count);
        Ok(())
    }

    async fn never_return(
        self: Rc<Self>,
        params: test::NeverReturnParams,
        mut results: test::NeverReturnResults,
    ) -> Result<(), capnp::Error> {
        let cap = params.get()?.get_cap()?;
        results.get().set_cap_copy(cap.clone());
        let guard = CancelGuard(self.tally.cancellations.clone());
        futures::future::pending::<()>().await;
        drop((guard, cap, results));
        Ok(())
    }

    async fn pipeline_only(
        self: Rc<Self>,
        params: test::PipelineOnlyParams,
        mut results: test::PipelineOnlyResults,
    ) -> Result<(), capnp::Error> {
        let start = params.get()?.get_start();
        let counter: counter::Client =
            capnp_actix::new_client(CounterImpl::new(start, &self.tally));
        results.get().set_counter(counter);
        results.set_pipeline()?;
        futures::future::pending::<()>().await;
        drop(results);
        Ok(())
    }

    async fn promised_counter(
        self: Rc<Self>,
        params: test::PromisedCounterParams,
        mut results: test::PromisedCounterResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        // Another object makes the counter later; we hand out the promise.
        let maker: test::Client = capnp_actix::new_client(TestImpl::new(&self.tally));
        let mut req = maker.delayed_counter_request();
        req.get().set_millis(p.get_millis());
        req.get().set_start(p.get_start());
        results.get().set_counter(req.send().pipeline.get_counter());
        Ok(())
    }

    async fn delayed_counter(
        self: Rc<Self>,
        params: test::DelayedCounterParams,
        mut results: test::DelayedCounterResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        actix_rt::time::sleep(Duration::from_millis(p.get_millis().into())).await;
        let counter: counter::Client =
            capnp_actix::new_client(CounterImpl::new(p.get_start(), &self.tally));
        results.get().set_counter(counter);
        Ok(())
    }
}

/// How a test reaches the `Test` server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In this process, no connection.
    Local,
    /// Through two connection actors over an in-memory duplex.
    Pair,
    /// Through two connection actors over loopback TCP.
    Tcp,
    /// Through two connection actors over a Unix-domain socket.
    Unix,
}

pub const ALL_MODES: [Mode; 4] = [Mode::Local, Mode::Pair, Mode::Tcp, Mode::Unix];

/// The modes that go through a connection.
pub const REMOTE_MODES: [Mode; 3] = [Mode::Pair, Mode::Tcp, Mode::Unix];

/// A reachable `Test` server and what keeps it reachable.
pub struct Harness {
    pub test: test::Client,
    pub tally: Tally,
    /// The client's connection, if any.
    pub client_conn: Option<actix::Addr<ConnActor>>,
    /// The server's connection, if any (known for `Pair` only).
    pub server_conn: Option<actix::Addr<ConnActor>>,
}

pub async fn harness(mode: Mode) -> Harness {
    let tally = Tally::default();
    let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
    match mode {
        Mode::Local => Harness {
            test: main.client(),
            tally,
            client_conn: None,
            server_conn: None,
        },
        Mode::Pair => {
            let (client, server) =
                ConnActor::pair(ConnOptions::new(), ConnOptions::new().main_interface(main));
            let cap = client.send(Bootstrap).await.unwrap().unwrap();
            Harness {
                test: cap.client(),
                tally,
                client_conn: Some(client),
                server_conn: Some(server),
            }
        }
        Mode::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let options = ConnOptions::new().main_interface(main);
            let (server_tx, server_rx) = futures::channel::oneshot::channel();
            actix::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = server_tx.send(ConnActor::from_tcp(stream, options));
            });
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            connected(
                ConnActor::from_tcp(stream, ConnOptions::new()),
                server_rx,
                tally,
            )
            .await
        }
        Mode::Unix => {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "capnp-actix-test-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let options = ConnOptions::new().main_interface(main);
            let (server_tx, server_rx) = futures::channel::oneshot::channel();
            actix::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = server_tx.send(ConnActor::from_unix(stream, options));
            });
            let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
            let client = ConnActor::from_unix(stream, ConnOptions::new());
            let harness = connected(client, server_rx, tally).await;
            let _ = std::fs::remove_file(&path);
            harness
        }
    }
}

/// A pending `Sequencer.next` call.
pub type NextCall = capnp::capability::Promise<
    capnp::capability::Response<sequencer::next_results::Owned>,
    capnp::Error,
>;

/// Calls `seq.next(i)` for each `i` in `range`, without waiting: the
/// sequencer fails any call that arrives out of order.
pub fn send_next(seq: &sequencer::Client, range: std::ops::Range<u32>) -> Vec<NextCall> {
    range
        .map(|i| {
            let mut req = seq.next_request();
            req.get().set_expected(i);
            req.send().promise
        })
        .collect()
}

/// Awaits calls made with [`send_next`] from 0 on, checking each arrived
/// in order; `label` names the case in a failure.
pub async fn expect_in_order(calls: Vec<NextCall>, label: &str) {
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call
            .await
            .unwrap_or_else(|e| panic!("{label}: call {i}: {e}"));
        assert_eq!(reply.get().unwrap().get_n(), i as u32, "{label}");
    }
}

/// A harness over a client connection and the server connection it was
/// accepted as.
async fn connected(
    client: actix::Addr<ConnActor>,
    server: futures::channel::oneshot::Receiver<actix::Addr<ConnActor>>,
    tally: Tally,
) -> Harness {
    let server = server.await.unwrap();
    let cap = client.send(Bootstrap).await.unwrap().unwrap();
    Harness {
        test: cap.client(),
        tally,
        client_conn: Some(client),
        server_conn: Some(server),
    }
}

/// `test.echo(text)`, awaited: the text that came back.
pub async fn echo(test: &test::Client, text: &str) -> String {
    try_echo(test, text).await.unwrap()
}

/// `test.echo(text)`, awaited, bounded by 10 s (no call may hang,
/// whatever its connection does): the text that came back, or why not.
pub async fn try_echo(test: &test::Client, text: &str) -> Result<String, capnp::Error> {
    let mut request = test.echo_request();
    request.get().set_text(text);
    let reply = capnp_actix::within(Duration::from_secs(10), request.send().promise).await?;
    Ok(reply.get()?.get_text()?.to_string()?)
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `f` against every mode, each in a fresh actix system.
pub fn for_each_mode<F, Fut>(f: F)
where
    F: Fn(Mode) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for_modes(&ALL_MODES, f)
}

/// Runs `f` against each of `modes`, each in a fresh actix system, with a
/// time limit.
pub fn for_modes<F, Fut>(modes: &[Mode], f: F)
where
    F: Fn(Mode) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for &mode in modes {
        let system = actix::System::new();
        system.block_on(async {
            match actix_rt::time::timeout(Duration::from_secs(20), f(mode)).await {
                Ok(()) => {}
                Err(_) => panic!("scenario timed out in mode {mode:?}"),
            }
        });
    }
}

pub fn typed<C: FromClientHook>(cap: &Capability) -> C {
    cap.client()
}

/// Counts its drop: put one in a method's future to see its work dropped.
pub struct Dropped(pub Rc<Cell<u32>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A `TailCaller` (P-13): ends `foo` with the tail call
/// `callee.foo(i, "from TailCaller")`.
pub struct TailCallerImpl;

impl test_capnp::tail_caller::Server for TailCallerImpl {
    async fn foo(
        self: Rc<Self>,
        params: test_capnp::tail_caller::FooParams,
        results: test_capnp::tail_caller::FooResults,
    ) -> Result<(), capnp::Error> {
        use capnp_actix::TailCall;
        let params = params.get()?;
        let mut request = params.get_callee()?.foo_request();
        request.get().set_i(params.get_i());
        request.get().set_t("from TailCaller");
        results.tail_call(request).await
    }
}
