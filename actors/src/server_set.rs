//! [`ServerSet`]: local objects of one type that can be recognised again
//! from a capability, once it has settled (the C++ reference's
//! `CapabilityServerSet`, capnp-rpc's too).
//!
//! A capability that went to a peer and came back resolves, once its
//! embargo lifts, to the local object; [`ServerSet::local_server`] waits
//! for that, so the calls made on the capability before are delivered
//! first (the C++ reference's `EmbargoUnwrap`).

use crate::capability::{CapKind, Capability};
use capnp::capability::FromServer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// Hosts servers of type `S` and recognises their capabilities.
///
/// ```
/// # use capnp_actix::{Capability, ServerSet};
/// # actix::System::new().block_on(async {
/// // A set for a generated server type; here one that holds no server.
/// let set: ServerSet<()> = ServerSet::new();
/// assert!(set.local_server(&Capability::null()).await.is_none());
/// # });
/// ```
pub struct ServerSet<S> {
    /// The servers hosted through this set, by object id.
    servers: RefCell<HashMap<u64, Weak<S>>>,
}

impl<S: 'static> Default for ServerSet<S> {
    fn default() -> Self {
        ServerSet {
            servers: RefCell::new(HashMap::new()),
        }
    }
}

impl<S: 'static> ServerSet<S> {
    /// An empty set.
    ///
    /// ```
    /// let set: capnp_actix::ServerSet<()> = capnp_actix::ServerSet::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Hosts `server` (as [`Capability::from_server`] does) and remembers
    /// it. `C` is the generated client type of its interface.
    ///
    /// ```ignore
    /// let set = ServerSet::new();
    /// let cap = set.new_capability::<calculator::Client>(CalculatorImpl);
    /// ```
    pub fn new_capability<C>(&self, server: S) -> Capability
    where
        C: FromServer<S>,
    {
        let server = Rc::new(server);
        let weak = Rc::downgrade(&server);
        let (cap, id) = crate::export::host::<C, S>(server);
        let mut servers = self.servers.borrow_mut();
        servers.retain(|_, s| s.strong_count() > 0);
        servers.insert(id, weak);
        cap
    }

    /// The server behind `cap`, if `cap` settles to one hosted through
    /// this set: waits until it has settled (past any embargo on it).
    ///
    /// ```ignore
    /// let server = set.local_server(&cap).await.expect("ours");
    /// ```
    pub async fn local_server(&self, cap: &Capability) -> Option<Rc<S>> {
        cap.when_settled().await;
        let settled = cap.settled();
        let CapKind::Local(local) = &settled.kind else {
            return None;
        };
        self.servers.borrow().get(&local.id)?.upgrade()
    }
}
