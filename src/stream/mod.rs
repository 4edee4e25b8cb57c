//! The caller's side of streaming calls (`-> stream`, P-15): how many
//! bytes of a capability's streaming calls may be in flight (a
//! [`FlowController`]), and the rule that the first failure of one fails
//! every later one ([`Stream`]).
//!
//! A streaming call's send completes as soon as the window has room, not
//! when the call returns: a `send, await, send` loop keeps the window full
//! instead of paying a round trip per call. The window is counted in bytes
//! of params (the calls' messages) sent and not yet returned.
//!
//! [`FixedWindow`] is what the peers do (capnp-rpc: 64 KiB). Time is given
//! in as plain [`Instant`]s, so that controllers that measure round trips
//! are tested without a clock.

use crate::Error;
use std::time::Instant;

mod adaptive;
pub use adaptive::{Adaptive, AdaptiveWindow, RTT_HORIZON};

/// Decides how many bytes of streaming calls may be in flight. Every
/// streaming call is sent at once (so that nothing sent after it can
/// overtake it); what the controller decides is when the sender may go on,
/// that is, when the send's promise resolves.
///
/// ```
/// use capnp_actix_proto::stream::{FixedWindow, FlowController};
/// use std::time::Instant;
/// let mut window = FixedWindow::new(1000);
/// let now = Instant::now();
/// window.sent(600, now);
/// assert!(window.ready(now), "600 in flight: under the window and one call");
/// window.sent(600, now);
/// window.sent(600, now);
/// assert!(!window.ready(now), "1800 in flight: full");
/// window.returned(600, now, now);
/// assert!(window.ready(now));
/// ```
pub trait FlowController: Send {
    /// A call of `bytes` went out at `now`.
    fn sent(&mut self, bytes: usize, now: Instant);
    /// A call of `bytes`, sent at `sent`, returned at `now`.
    fn returned(&mut self, bytes: usize, sent: Instant, now: Instant);
    /// Whether the sender may go on at `now`.
    fn ready(&self, now: Instant) -> bool;
    /// When a sender that may not go on now may go on without another
    /// call returning first (a controller that paces its sends); `None`,
    /// the default, when only a return can let it on.
    fn wake_at(&self, _now: Instant) -> Option<Instant> {
        None
    }
    /// Bytes in flight.
    fn in_flight(&self) -> usize;
    /// The window now, in bytes.
    fn window(&self) -> usize;
}

/// The default window of [`FixedWindow`]: 64 KiB, capnp-rpc's.
pub const DEFAULT_WINDOW: usize = 64 * 1024;

/// A window of a fixed number of bytes. As in both reference
/// implementations, the bytes in flight may pass it by the largest call
/// sent so far (so a call as large as the window still has a second in
/// flight behind it).
///
/// ```
/// use capnp_actix_proto::stream::{FixedWindow, FlowController, DEFAULT_WINDOW};
/// assert_eq!(FixedWindow::default().window(), DEFAULT_WINDOW);
/// ```
#[derive(Clone, Debug)]
pub struct FixedWindow {
    window: usize,
    in_flight: usize,
    largest: usize,
}

impl FixedWindow {
    /// A window of `bytes` (at least one byte).
    ///
    /// ```
    /// use capnp_actix_proto::stream::{FixedWindow, FlowController};
    /// assert_eq!(FixedWindow::new(4096).window(), 4096);
    /// ```
    pub fn new(bytes: usize) -> Self {
        FixedWindow {
            window: bytes.max(1),
            in_flight: 0,
            largest: 0,
        }
    }
}

impl Default for FixedWindow {
    fn default() -> Self {
        FixedWindow::new(DEFAULT_WINDOW)
    }
}

impl FlowController for FixedWindow {
    fn sent(&mut self, bytes: usize, _now: Instant) {
        self.in_flight = self.in_flight.saturating_add(bytes);
        self.largest = self.largest.max(bytes);
    }

    fn returned(&mut self, bytes: usize, _sent: Instant, _now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    fn ready(&self, _now: Instant) -> bool {
        self.in_flight < self.window.saturating_add(self.largest)
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn window(&self) -> usize {
        self.window
    }
}

/// Which flow controller a connection's streaming calls get.
///
/// ```
/// use capnp_actix_proto::stream::{Adaptive, FlowControl};
/// let fixed = FlowControl::Fixed(64 * 1024);
/// let adaptive = FlowControl::Adaptive(Adaptive::default().max_window(8 << 20));
/// assert_eq!(fixed.controller().window(), 64 * 1024);
/// assert_eq!(adaptive.controller().window(), 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// A [`FixedWindow`] of this many bytes, as the peers do.
    Fixed(usize),
    /// An [`AdaptiveWindow`] with these settings.
    Adaptive(Adaptive),
}

impl Default for FlowControl {
    /// The adaptive window with its default settings.
    fn default() -> Self {
        FlowControl::Adaptive(Adaptive::default())
    }
}

impl FlowControl {
    /// A new controller of this kind.
    ///
    /// ```
    /// use capnp_actix_proto::stream::FlowControl;
    /// assert_eq!(FlowControl::Fixed(100).controller().in_flight(), 0);
    /// ```
    pub fn controller(&self) -> Box<dyn FlowController> {
        match *self {
            FlowControl::Fixed(bytes) => Box::new(FixedWindow::new(bytes)),
            FlowControl::Adaptive(settings) => Box::new(AdaptiveWindow::new(settings)),
        }
    }
}

/// What a streaming call's send does.
#[derive(Debug, PartialEq)]
pub enum Admit {
    /// It was sent, and the sender may go on at once.
    Now,
    /// It was sent; the sender waits until [`Stream::ready`] says so.
    Wait,
    /// It is not sent: an earlier streaming call on the capability failed
    /// with this.
    Failed(Error),
}

/// One capability's streaming calls: its flow controller, and its first
/// failure.
///
/// ```
/// use capnp_actix_proto::stream::{Admit, FixedWindow, Stream};
/// use capnp_actix_proto::Error;
/// use std::time::Instant;
/// let now = Instant::now();
/// let mut stream = Stream::new(Box::new(FixedWindow::new(50)));
/// assert_eq!(stream.send(80, now), Admit::Now);
/// assert_eq!(stream.send(80, now), Admit::Wait);
/// stream.returned(80, now, Err(&Error::failed("disk full")), now);
/// // Everything after the failure fails with it, unsent.
/// assert_eq!(stream.send(80, now), Admit::Failed(Error::failed("disk full")));
/// assert_eq!(stream.ready(now), Err(Error::failed("disk full")));
/// ```
pub struct Stream {
    controller: Box<dyn FlowController>,
    failed: Option<Error>,
}

impl Stream {
    /// A stream whose window `controller` keeps.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{FixedWindow, Stream};
    /// let stream = Stream::new(Box::new(FixedWindow::default()));
    /// ```
    pub fn new(controller: Box<dyn FlowController>) -> Self {
        Stream {
            controller,
            failed: None,
        }
    }

    /// A call of `bytes` is to be sent at `now`: unless the stream failed,
    /// it is counted as sent (send it now), and the answer says whether
    /// its sender may go on.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{Admit, FixedWindow, Stream};
    /// let mut stream = Stream::new(Box::new(FixedWindow::new(10)));
    /// // A call larger than the window goes, and its sender goes on.
    /// assert_eq!(stream.send(50, std::time::Instant::now()), Admit::Now);
    /// ```
    pub fn send(&mut self, bytes: usize, now: Instant) -> Admit {
        if let Some(e) = &self.failed {
            return Admit::Failed(e.clone());
        }
        self.controller.sent(bytes, now);
        if self.controller.ready(now) {
            Admit::Now
        } else {
            Admit::Wait
        }
    }

    /// Whether a waiting sender may go on at `now`, or the stream's
    /// failure.
    ///
    /// ```
    /// let stream = capnp_actix_proto::stream::Stream::new(Box::new(
    ///     capnp_actix_proto::stream::FixedWindow::default(),
    /// ));
    /// assert_eq!(stream.ready(std::time::Instant::now()), Ok(true));
    /// ```
    pub fn ready(&self, now: Instant) -> Result<bool, Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(self.controller.ready(now)),
        }
    }

    /// When to look again whether a waiting sender may go on, if not only
    /// at the next return (see [`FlowController::wake_at`]).
    ///
    /// ```
    /// let stream = capnp_actix_proto::stream::Stream::new(Box::new(
    ///     capnp_actix_proto::stream::FixedWindow::default(),
    /// ));
    /// assert_eq!(stream.wake_at(std::time::Instant::now()), None);
    /// ```
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        match &self.failed {
            Some(_) => None,
            None => self.controller.wake_at(now),
        }
    }

    /// A call of `bytes` sent at `sent` returned at `now` with `outcome`;
    /// the first failure is kept.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{FixedWindow, Stream};
    /// let now = std::time::Instant::now();
    /// let mut stream = Stream::new(Box::new(FixedWindow::new(10)));
    /// stream.send(10, now);
    /// stream.returned(10, now, Ok(()), now);
    /// assert_eq!(stream.in_flight(), 0);
    /// ```
    pub fn returned(
        &mut self,
        bytes: usize,
        sent: Instant,
        outcome: Result<(), &Error>,
        now: Instant,
    ) {
        self.controller.returned(bytes, sent, now);
        if let (Err(e), None) = (outcome, &self.failed) {
            self.failed = Some(e.clone());
        }
    }

    /// Hands the stream to `controller`, which takes over the bytes in
    /// flight (sent under the one before, returning under it).
    ///
    /// ```
    /// use capnp_actix_proto::stream::{FixedWindow, Stream};
    /// let now = std::time::Instant::now();
    /// let mut stream = Stream::new(Box::new(FixedWindow::default()));
    /// stream.send(300, now);
    /// stream.set_controller(Box::new(FixedWindow::new(1 << 20)));
    /// assert_eq!((stream.window(), stream.in_flight()), (1 << 20, 300));
    /// ```
    pub fn set_controller(&mut self, mut controller: Box<dyn FlowController>) {
        let in_flight = self.controller.in_flight();
        if in_flight > 0 {
            controller.sent(in_flight, Instant::now());
        }
        self.controller = controller;
    }

    /// The first failure, if one came.
    ///
    /// ```
    /// let stream = capnp_actix_proto::stream::Stream::new(Box::new(
    ///     capnp_actix_proto::stream::FixedWindow::default(),
    /// ));
    /// assert!(stream.failure().is_none());
    /// ```
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Bytes in flight.
    ///
    /// ```
    /// let stream = capnp_actix_proto::stream::Stream::new(Box::new(
    ///     capnp_actix_proto::stream::FixedWindow::default(),
    /// ));
    /// assert_eq!(stream.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.controller.in_flight()
    }

    /// The window now.
    ///
    /// ```
    /// let stream = capnp_actix_proto::stream::Stream::new(Box::new(
    ///     capnp_actix_proto::stream::FixedWindow::new(77),
    /// ));
    /// assert_eq!(stream.window(), 77);
    /// ```
    pub fn window(&self) -> usize {
        self.controller.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_lets_senders_on_until_full_then_as_calls_return() {
        let now = Instant::now();
        let mut stream = Stream::new(Box::new(FixedWindow::new(1000)));
        // Under window + largest call (1000 + 250): four go on, the fifth
        // (1250 in flight) waits.
        for _ in 0..4 {
            assert_eq!(stream.send(250, now), Admit::Now);
        }
        assert_eq!(stream.send(250, now), Admit::Wait);
        assert_eq!(stream.in_flight(), 1250);
        stream.returned(250, now, Ok(()), now);
        assert_eq!(stream.ready(now), Ok(true));
    }

    #[test]
    fn two_calls_as_large_as_the_window_are_in_flight_as_with_the_peers() {
        let now = Instant::now();
        let mut stream = Stream::new(Box::new(FixedWindow::new(DEFAULT_WINDOW)));
        let call = DEFAULT_WINDOW + 100; // a 64 KiB write and its framing
        assert_eq!(stream.send(call, now), Admit::Now);
        assert_eq!(stream.send(call, now), Admit::Wait);
        assert_eq!(stream.in_flight(), 2 * call);
    }

    #[test]
    fn the_first_failure_fails_every_later_call_even_after_others_return_fine() {
        let now = Instant::now();
        let mut stream = Stream::new(Box::new(FixedWindow::new(1000)));
        stream.send(10, now);
        stream.send(10, now);
        stream.send(10, now);
        stream.returned(10, now, Err(&Error::overloaded("first")), now);
        stream.returned(10, now, Err(&Error::failed("second")), now);
        stream.returned(10, now, Ok(()), now);
        assert_eq!(
            stream.send(10, now),
            Admit::Failed(Error::overloaded("first"))
        );
        assert_eq!(stream.in_flight(), 0);
    }
}
