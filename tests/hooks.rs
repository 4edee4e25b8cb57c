//! How capnp's hook traits meet this runtime: a capability is recognised
//! as ours by identity, never by a value a foreign hook returns (F-09).

mod support;

use capnp::any_pointer;
use capnp::capability::{FromClientHook, Promise};
use capnp::private::capability::{ClientHook, ParamsHook, ResultsHook};
use capnp_actix::Capability;
use support::raw::run;
// The generated code names its own types as `crate::test_capnp::...`.
use support::test_capnp;
use support::{Tally, TestImpl};
use test_capnp::test;

/// A hook of "another RPC system" that copies every value a real hook of
/// ours reports (brand, pointer), and whose object holds bytes that make
/// no sense as one of our capabilities. Taking it for ours would read
/// those bytes as a `Capability`: undefined behaviour, in practice a crash.
struct Impostor {
    brand: usize,
    ptr: usize,
    garbage: [usize; 6],
}

impl ClientHook for Impostor {
    fn add_ref(&self) -> Box<dyn ClientHook> {
        Box::new(Impostor {
            brand: self.brand,
            ptr: self.ptr,
            garbage: self.garbage,
        })
    }
    fn new_call(
        &self,
        _: u64,
        _: u16,
        _: Option<capnp::MessageSize>,
    ) -> capnp::capability::Request<any_pointer::Owned, any_pointer::Owned> {
        unreachable!("the impostor is never called")
    }
    fn call(
        &self,
        _: u64,
        _: u16,
        _: Box<dyn ParamsHook>,
        _: Box<dyn ResultsHook>,
    ) -> Promise<(), capnp::Error> {
        unreachable!("the impostor is never called")
    }
    fn get_brand(&self) -> usize {
        self.brand
    }
    fn get_ptr(&self) -> usize {
        self.ptr
    }
    fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
        None
    }
    fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
        None
    }
    fn when_resolved(&self) -> Promise<(), capnp::Error> {
        Promise::ok(())
    }
}

/// A zero-sized impostor: its address may be anything, even that of a
/// live hook of ours.
struct ZeroSized;

impl ClientHook for ZeroSized {
    fn add_ref(&self) -> Box<dyn ClientHook> {
        Box::new(ZeroSized)
    }
    fn new_call(
        &self,
        _: u64,
        _: u16,
        _: Option<capnp::MessageSize>,
    ) -> capnp::capability::Request<any_pointer::Owned, any_pointer::Owned> {
        unreachable!("never called")
    }
    fn call(
        &self,
        _: u64,
        _: u16,
        _: Box<dyn ParamsHook>,
        _: Box<dyn ResultsHook>,
    ) -> Promise<(), capnp::Error> {
        unreachable!("never called")
    }
    fn get_brand(&self) -> usize {
        0
    }
    fn get_ptr(&self) -> usize {
        0
    }
    fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
        None
    }
    fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
        None
    }
    fn when_resolved(&self) -> Promise<(), capnp::Error> {
        Promise::ok(())
    }
}

async fn echo(cap: &Capability, text: &str) -> Result<String, capnp::Error> {
    let client: test::Client = cap.client();
    let mut request = client.echo_request();
    request.get().set_text(text);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_text()?.to_string()?)
}

// covers: F-09
#[test]
fn a_foreign_hook_reporting_our_brand_is_not_taken_for_ours() {
    run(async {
        let real: test::Client =
            Capability::from_server::<test::Client, _>(TestImpl::new(&Tally::default())).client();
        let impostor = Impostor {
            brand: real.as_client_hook().get_brand(),
            ptr: real.as_client_hook().get_ptr(),
            garbage: [usize::MAX; 6],
        };
        let foreign = capnp::capability::Client::new(Box::new(impostor));
        let cap = Capability::from_client(&foreign);
        let err = echo(&cap, "hi").await.unwrap_err();
        assert!(
            err.to_string().contains("another RPC system"),
            "the impostor's capability: {err}"
        );

        let zero = capnp::capability::Client::new(Box::new(ZeroSized));
        let err = echo(&Capability::from_client(&zero), "hi")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("another RPC system"), "{err}");

        // A hook of ours still carries its own capability, and so does a
        // copy of it (`add_ref`).
        let back = Capability::from_client(&real);
        assert_eq!(echo(&back, "ours").await.unwrap(), "ours");
        let copy: test::Client = test::Client::new(real.as_client_hook().add_ref());
        drop(real);
        assert_eq!(
            echo(&Capability::from_client(&copy), "copy").await.unwrap(),
            "copy"
        );
    });
}

// covers: P-10
#[test]
fn when_resolved_waits_for_a_promise_to_settle() {
    support::for_each_mode(|mode| async move {
        let h = support::harness(mode).await;
        let mut req = h.test.delayed_counter_request();
        req.get().set_millis(50);
        req.get().set_start(4);
        let pending = req.send();
        let promised = pending.pipeline.get_counter();
        let mut resolved = promised.client.when_resolved();
        // Polled once before the call can have returned: not ready.
        assert!(
            futures::poll!(&mut resolved).is_pending(),
            "{mode:?}: resolved before the call returned"
        );
        resolved.await.unwrap();
        // Settled now: ready at once, and the capability works.
        let mut again = promised.client.when_resolved();
        assert!(futures::poll!(&mut again).is_ready(), "{mode:?}");
        let value = promised.get_request().send().promise.await.unwrap();
        assert_eq!(value.get().unwrap().get_value(), 4, "{mode:?}");
        drop(pending);
    });
}
