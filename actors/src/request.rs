//! [`Request`]: an untyped call being prepared, made by
//! [`Capability::new_call`]. Typed code builds its requests through capnp's
//! generated clients instead (see `hooks`), which wrap this one.

use crate::call::{OutCall, PendingCall, Wants};
use crate::capability::Capability;
use crate::payload::Body;
use capnp::any_pointer;
use capnp_actix_proto::rpc_capnp::message;

impl Capability {
    /// Starts a call of method `method_id` of interface `interface_id`.
    /// Fill its params with [`Request::params`], then [`Request::send`].
    ///
    /// Typed code does not need this: convert the capability with
    /// [`Capability::client`] and use the generated methods.
    ///
    /// ```
    /// use capnp_actix::Capability;
    /// # actix::System::new().block_on(async {
    /// let cap = Capability::null();
    /// let mut request = cap.new_call(0x1234, 0);
    /// request.params().clear();
    /// let result = request.send().await;
    /// assert!(result.is_err()); // a null capability fails every call
    /// # });
    /// ```
    pub fn new_call(&self, interface_id: u64, method_id: u16) -> Request {
        Request::new(self.clone(), interface_id, method_id)
    }
}

/// A call being prepared: its target, method and params.
///
/// ```
/// use capnp_actix::Capability;
/// let mut request = Capability::null().new_call(1, 2);
/// request.params().set_as::<capnp::text::Owned>("hi").unwrap();
/// ```
pub struct Request {
    /// Where the call goes.
    target: Capability,
    /// The method's interface.
    interface_id: u64,
    /// The method's ordinal in the interface.
    method_id: u16,
    /// A `Message{call}` whose params content the caller fills in place.
    message: capnp_actix_proto::message::OutMessage,
    /// Capabilities the caller put in the params, in pointer-index order.
    cap_table: capnp::private::layout::CapTable,
}

impl Request {
    fn new(target: Capability, interface_id: u64, method_id: u16) -> Request {
        let mut message = capnp_actix_proto::message::new_message();
        {
            let mut call = message.init_root::<message::Builder>().init_call();
            call.set_interface_id(interface_id);
            call.set_method_id(method_id);
            call.init_params();
        }
        Request {
            target,
            interface_id,
            method_id,
            message,
            cap_table: Vec::new(),
        }
    }

    /// The params content, to fill in place. Capabilities set in it travel
    /// with the call.
    ///
    /// ```
    /// let mut request = capnp_actix::Capability::null().new_call(1, 2);
    /// request.params().set_as::<capnp::text::Owned>("hello").unwrap();
    /// ```
    pub fn params(&mut self) -> any_pointer::Builder<'_> {
        params_of(&mut self.message, &mut self.cap_table)
    }

    /// Where the call goes.
    pub(crate) fn target(&self) -> &Capability {
        &self.target
    }

    /// The size of the call's message, in bytes (what a streaming call
    /// counts against its window).
    pub(crate) fn bytes(&self) -> usize {
        capnp_actix_proto::frame::encoded_words(&self.message) * 8
    }

    /// Sends the call. The result is a future of the response that also
    /// offers pipelined capabilities before the response arrives.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let pending = capnp_actix::Capability::null().new_call(1, 2).send();
    /// let promised = pending.pipeline().cap(&[0]);
    /// assert!(pending.await.is_err());
    /// # drop(promised);
    /// # });
    /// ```
    pub fn send(self) -> PendingCall {
        self.send_with(Wants::Results)
    }

    /// Sends the request only to pipeline on its results (the C++
    /// reference's `sendForPipeline`): to a peer it says
    /// `onlyPromisePipeline`, so that no `Return` comes back (P-14). The
    /// call is finished when the pipeline and every capability taken from
    /// it are dropped.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let pipeline = capnp_actix::Capability::null().new_call(1, 2).send_for_pipeline();
    /// let promised = pipeline.cap(&[0]);
    /// # drop(promised);
    /// # });
    /// ```
    pub fn send_for_pipeline(self) -> crate::call::Pipeline {
        self.send_with(Wants::PipelineOnly).pipeline()
    }

    /// Sends the request as a tail call back to the peer whose call it
    /// ends: the peer keeps its results (`sendResultsTo.yourself`).
    pub(crate) fn send_results_elsewhere(self) -> PendingCall {
        self.send_with(Wants::Elsewhere)
    }

    /// Sends the request as a streaming call, whose results (always
    /// empty) nothing pipelines on: to a peer it says
    /// `noPromisePipelining` (P-14).
    pub(crate) fn send_streaming(self) -> PendingCall {
        self.send_with(Wants::NoPipelining)
    }

    fn send_with(self, wants: Wants) -> PendingCall {
        let caps = crate::hooks::capabilities_of(&self.cap_table);
        self.target.dispatch(OutCall {
            interface_id: self.interface_id,
            method_id: self.method_id,
            body: Body::Built(self.message),
            caps,
            return_for: None,
            hops: 0,
            wants,
        })
    }
}

/// The params content of a `Message{call}` under construction, imbued with
/// `cap_table`.
fn params_of<'a>(
    message: &'a mut capnp_actix_proto::message::OutMessage,
    cap_table: &'a mut capnp::private::layout::CapTable,
) -> any_pointer::Builder<'a> {
    let root: message::Builder = message.get_root().expect("a request holds a Message");
    let call = match root.which() {
        Ok(message::Call(Ok(call))) => call,
        _ => unreachable!("a request's message is always a Call"),
    };
    let mut content = call.get_params().expect("params initialized").get_content();
    capnp::traits::ImbueMut::imbue_mut(&mut content, cap_table);
    content
}
