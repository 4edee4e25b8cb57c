//! [`AdaptiveWindow`]: a streaming window that follows the path instead of
//! a fixed size or the socket buffer.
//!
//! The window is the bandwidth-delay product the calls' returns show, plus
//! a small allowance of queueing:
//!
//! ```text
//! window = rate × (min_rtt + allowance)
//! ```
//!
//! - `min_rtt` is the shortest round trip of a streaming call seen in the
//!   last [`RTT_HORIZON`] or so (the path with nothing queued on it).
//! - `rate` is how fast the bottleneck lets calls through. A window's calls
//!   leave together; the bottleneck (a link, or a server that handles one
//!   call at a time) spaces them out, and their returns keep that spacing.
//!   So the spacing of the returns of calls that waited behind each other
//!   measures the bottleneck's rate even while the window is still too
//!   small to fill the path (the packet-pair idea), and the window gets to
//!   the path's size within the first round trips instead of doubling its
//!   way there, and past it into the queues. Until the returns were spaced
//!   over [`Adaptive::queue_delay`], every byte returned opens the window
//!   by one more (a doubling a round trip).
//! - `allowance` is how long a call may stand in a queue: the larger of
//!   [`Adaptive::queue_delay`] (1 ms by default) and a sixteenth of
//!   `min_rtt`. Enough to keep the bottleneck busy; anything more only
//!   delays the other calls on the connection.
//!
//! The window is sized again at the end of every round trip. It shrinks at
//! most by half a round trip. When it grows, the calls it lets on are paced
//! at the bottleneck's rate until they fill it, so that they join the path
//! instead of a queue in front of it (the one time a pacing controller asks
//! for a timer: [`FlowController::wake_at`]). When a round trip's shortest
//! call took longer than `min_rtt` plus twice the allowance, a queue stands
//! that the rate did not foresee, and the window shrinks by the ratio of
//! the round trips. A round trip in which the sender kept less than half
//! the window in flight (it had nothing to send) says nothing about the
//! path and does not shrink the window. The window always stays between
//! [`Adaptive::min_window`] and [`Adaptive::max_window`], the bound on the
//! bytes of streaming calls that can wait in the connection's send buffer.
//!
//! Learnt from BBR (a bottleneck's rate and the path's shortest round trip
//! as the model of the path, and pacing) and from the C++ reference's v2
//! `AdaptiveFlowController`, which estimates the product from measured
//! round trips and acknowledged bytes.

use super::FlowController;
use std::time::{Duration, Instant};

/// How long the shortest round trip is remembered: a path whose round trip
/// grew is believed after at most twice this.
pub const RTT_HORIZON: Duration = Duration::from_secs(10);

/// The settings of an [`AdaptiveWindow`].
///
/// ```
/// use capnp_actix_proto::stream::Adaptive;
/// let settings = Adaptive::default().max_window(4 << 20);
/// assert_eq!(settings.max_window, 4 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// The window never shrinks below this: 64 KiB by default.
    pub min_window: usize,
    /// The window never grows past this: the most bytes of streaming
    /// calls that may wait in the connection's send buffer (16 MiB by
    /// default).
    pub max_window: usize,
    /// The window a stream starts with: 1 MiB by default (enough calls
    /// that their returns span a link's time ticks at 250 MB/s, so that
    /// the first round trip measures the rate).
    pub initial_window: usize,
    /// The least queueing the window allows for: 1 ms by default.
    pub queue_delay: Duration,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            min_window: 64 * 1024,
            max_window: 16 << 20,
            initial_window: 1024 * 1024,
            queue_delay: Duration::from_millis(1),
        }
    }
}

impl Adaptive {
    /// With a bound of `bytes` on the window (at least one byte); the
    /// smaller windows are lowered to it where they pass it.
    ///
    /// ```
    /// let settings = capnp_actix_proto::stream::Adaptive::default().max_window(1000);
    /// assert_eq!((settings.min_window, settings.initial_window), (1000, 1000));
    /// ```
    pub fn max_window(mut self, bytes: usize) -> Self {
        self.max_window = bytes.max(1);
        self.min_window = self.min_window.min(self.max_window);
        self.initial_window = self.initial_window.min(self.max_window);
        self
    }

    /// With `delay` as the least queueing allowed for.
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = capnp_actix_proto::stream::Adaptive::default()
    ///     .queue_delay(Duration::from_millis(3));
    /// assert_eq!(settings.queue_delay, Duration::from_millis(3));
    /// ```
    pub fn queue_delay(mut self, delay: Duration) -> Self {
        self.queue_delay = delay;
        self
    }
}

/// The shortest of the samples of the last [`RTT_HORIZON`] or so: two
/// buckets, the current one and the one before.
#[derive(Clone, Debug, Default)]
struct RecentMin {
    current: Option<(Instant, Duration)>,
    previous: Option<Duration>,
}

impl RecentMin {
    fn add(&mut self, sample: Duration, now: Instant) {
        match &mut self.current {
            Some((began, least)) if now.saturating_duration_since(*began) < RTT_HORIZON => {
                *least = (*least).min(sample);
            }
            current => {
                self.previous = current.map(|(_, least)| least);
                *current = Some((now, sample));
            }
        }
    }

    fn get(&self) -> Option<Duration> {
        let current = self.current.map(|(_, least)| least);
        match (current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What one round trip showed: the returns after one return, up to the
/// return of the first call sent after it.
#[derive(Clone, Debug)]
struct Round {
    /// When it started (at a return).
    start: Instant,
    /// Calls sent before it started: the next one's return ends it.
    sent_before: u64,
    /// Bytes returned.
    bytes: usize,
    /// Of those, the bytes of calls that had been waiting behind the call
    /// returned before them, and the time between their returns and the
    /// returns before them: the bottleneck's pace.
    paced_bytes: usize,
    paced_time: Duration,
    paced_returns: u32,
    /// Its shortest round trip.
    least_rtt: Option<Duration>,
    /// The most bytes in flight while it lasted.
    most_in_flight: usize,
}

impl Round {
    fn new(start: Instant, sent_before: u64, in_flight: usize) -> Self {
        Round {
            start,
            sent_before,
            bytes: 0,
            paced_bytes: 0,
            paced_time: Duration::ZERO,
            paced_returns: 0,
            least_rtt: None,
            most_in_flight: in_flight,
        }
    }

    /// The bottleneck's rate in bytes a second, from the returns' pace
    /// where enough of them waited behind others, else from the bytes
    /// over the round (a lower bound).
    fn rate(&self, now: Instant) -> Option<f64> {
        let paced = self.paced_time.as_secs_f64();
        if self.paced_returns >= 3 && paced > 0.0 {
            return Some(self.paced_bytes as f64 / paced);
        }
        let span = now.saturating_duration_since(self.start).as_secs_f64();
        (span > 0.0 && self.bytes > 0).then(|| self.bytes as f64 / span)
    }
}

/// A window sized from the round trips and the bottleneck's rate the
/// calls' returns show (see the module's text).
///
/// ```
/// use capnp_actix_proto::stream::{Adaptive, AdaptiveWindow, FlowController};
/// use std::time::{Duration, Instant};
/// let mut window = AdaptiveWindow::new(Adaptive::default());
/// let start = Instant::now();
/// // A path of 10 ms round trips whose bottleneck takes 100 MB/s: the
/// // first window's 64 calls of 16 KiB come back 164 µs apart.
/// let call = 16 * 1024;
/// let spacing = Duration::from_micros(164);
/// for _ in 0..64 {
///     window.sent(call, start);
/// }
/// for i in 0..64 {
///     window.returned(call, start, start + Duration::from_millis(10) + spacing * i);
/// }
/// // About 100 MB/s × (10 ms + 1 ms).
/// assert!((1_000_000..1_200_000).contains(&window.window()), "{}", window.window());
/// ```
#[derive(Clone, Debug)]
pub struct AdaptiveWindow {
    settings: Adaptive,
    /// The window the controller aims at.
    window: usize,
    /// While the window opens towards `window`: the calls sent go at no
    /// more than the bottleneck's rate, so that the bytes it lets on join
    /// the path instead of a queue in front of it.
    opening: Option<Opening>,
    in_flight: usize,
    /// The bottleneck's rate (bytes a second), once measured.
    rate: Option<f64>,
    /// Calls sent and returned so far.
    sent_calls: u64,
    returned_calls: u64,
    /// When the last call returned.
    last_return: Option<Instant>,
    min_rtt: RecentMin,
    round: Option<Round>,
}

/// A pace for the calls sent: `rate` bytes a second from `since` on, and
/// a burst of `burst` bytes.
#[derive(Clone, Copy, Debug)]
struct Opening {
    since: Instant,
    rate: f64,
    burst: f64,
    /// Bytes sent since `since`.
    sent: usize,
}

impl Opening {
    /// Whether the pace lets a call go at `now`.
    fn lets_on(&self, now: Instant) -> bool {
        let allowed =
            self.burst + self.rate * now.saturating_duration_since(self.since).as_secs_f64();
        (self.sent as f64) <= allowed
    }

    /// When it will.
    fn lets_on_at(&self) -> Instant {
        // (A microsecond late, so that the pace surely lets it on then.)
        let wait = (self.sent as f64 - self.burst).max(0.0) / self.rate;
        self.since + Duration::from_secs_f64(wait) + Duration::from_micros(1)
    }
}

impl AdaptiveWindow {
    /// A window with `settings`, at their initial window.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{Adaptive, AdaptiveWindow, FlowController};
    /// assert_eq!(AdaptiveWindow::new(Adaptive::default()).window(), 1 << 20);
    /// ```
    pub fn new(settings: Adaptive) -> Self {
        let max = settings.max_window.max(1);
        let min = settings.min_window.clamp(1, max);
        AdaptiveWindow {
            window: settings.initial_window.clamp(min, max),
            opening: None,
            settings: Adaptive {
                min_window: min,
                max_window: max,
                ..settings
            },
            in_flight: 0,
            rate: None,
            sent_calls: 0,
            returned_calls: 0,
            last_return: None,
            min_rtt: RecentMin::default(),
            round: None,
        }
    }

    /// The shortest recent round trip, once a call returned.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{Adaptive, AdaptiveWindow};
    /// assert_eq!(AdaptiveWindow::new(Adaptive::default()).min_rtt(), None);
    /// ```
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get()
    }

    /// The bottleneck's rate in bytes a second, once measured.
    ///
    /// ```
    /// use capnp_actix_proto::stream::{Adaptive, AdaptiveWindow};
    /// assert_eq!(AdaptiveWindow::new(Adaptive::default()).rate(), None);
    /// ```
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How long a call may stand in a queue.
    fn allowance(&self, min_rtt: Duration) -> Duration {
        self.settings.queue_delay.max(min_rtt / 16)
    }

    /// Aims the window at `target` bytes at `now`: down at once; up with
    /// the calls paced at the bottleneck's `rate` until they fill it.
    fn aim(&mut self, target: f64, rate: f64, allowance: Duration, now: Instant) {
        let (min, max) = (self.settings.min_window, self.settings.max_window);
        let target = (target.max(self.window as f64 / 2.0) as usize).clamp(min, max);
        self.opening = (target > self.in_flight && rate > 0.0).then_some(Opening {
            since: now,
            rate,
            burst: rate * allowance.as_secs_f64(),
            sent: 0,
        });
        self.window = target;
    }

    /// Measures the rate from `round` where its returns were paced over
    /// long enough, and aims the window at it (in the first round trips,
    /// as soon as they show it).
    fn measure(&mut self, round: &Round, ended: bool, now: Instant) {
        let Some(min_rtt) = self.min_rtt.get() else {
            return;
        };
        let allowance = self.allowance(min_rtt);
        let paced = round.paced_returns >= 3 && round.paced_time >= self.settings.queue_delay;
        let rate = match (paced, ended) {
            (true, _) => round.paced_bytes as f64 / round.paced_time.as_secs_f64(),
            (false, true) if self.rate.is_some() => match round.rate(now) {
                Some(rate) => rate,
                None => return,
            },
            _ => return,
        };
        if !ended && self.rate.is_some() {
            return; // Past the first measure, the window moves once a round.
        }
        self.rate = Some(rate);
        let mut target = rate * (min_rtt + allowance).as_secs_f64();
        if let (true, Some(least)) = (ended, round.least_rtt) {
            if least > min_rtt + allowance * 2 {
                // A queue stands: shrink it by the ratio of the round trips.
                let standing =
                    self.window as f64 * (min_rtt + allowance).as_secs_f64() / least.as_secs_f64();
                target = target.min(standing);
            }
        }
        if target < self.window as f64 && (round.most_in_flight as f64) < self.window as f64 / 2.0 {
            return; // The sender left the window unused: no news of the path.
        }
        self.aim(target, rate, allowance, now);
    }
}

impl FlowController for AdaptiveWindow {
    fn sent(&mut self, bytes: usize, _now: Instant) {
        self.in_flight = self.in_flight.saturating_add(bytes);
        self.sent_calls += 1;
        if let Some(opening) = &mut self.opening {
            opening.sent = opening.sent.saturating_add(bytes);
            if self.in_flight >= self.window {
                self.opening = None; // Open: the returns pace the calls now.
            }
        }
        if let Some(round) = &mut self.round {
            round.most_in_flight = round.most_in_flight.max(self.in_flight);
        }
    }

    fn returned(&mut self, bytes: usize, sent: Instant, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
        self.returned_calls += 1;
        let rtt = now.saturating_duration_since(sent);
        let previous = self.last_return.replace(now);
        self.min_rtt.add(rtt, now);
        let min_rtt = self.min_rtt.get().unwrap_or(rtt);
        if self.rate.is_none() {
            // Until the rate is known, every byte returned opens the
            // window by one more (a doubling a round trip).
            let max = self.settings.max_window;
            self.window = self.window.saturating_add(bytes).min(max);
        }
        let Some(round) = &mut self.round else {
            // The first return starts the first round.
            self.round = Some(Round::new(now, self.sent_calls, self.in_flight));
            return;
        };
        round.bytes = round.bytes.saturating_add(bytes);
        round.least_rtt = Some(round.least_rtt.map_or(rtt, |least| least.min(rtt)));
        // A call that had been on its way for half a round trip when the
        // one before it returned was waiting behind it: the time between
        // their returns is the time the bottleneck took for it.
        if let Some(previous) = previous {
            if sent + min_rtt / 2 <= previous {
                round.paced_bytes = round.paced_bytes.saturating_add(bytes);
                round.paced_time += now.saturating_duration_since(previous);
                round.paced_returns += 1;
            }
        }
        if self.returned_calls > round.sent_before {
            let next = Round::new(now, self.sent_calls, self.in_flight);
            let ended = std::mem::replace(round, next);
            self.measure(&ended, true, now);
        } else if self.rate.is_none() {
            let round = round.clone();
            self.measure(&round, false, now);
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.in_flight < self.window && self.opening.map_or(true, |o| o.lets_on(now))
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let opening = self.opening?;
        (self.in_flight < self.window && !opening.lets_on(now)).then(|| opening.lets_on_at())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn window(&self) -> usize {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path for calls: a round trip with nothing queued, and a
    /// bottleneck of `rate` bytes a second in front of which calls queue.
    struct Path {
        rtt: Duration,
        rate: f64,
        /// When the bottleneck is next free.
        free: Instant,
        /// If set, the bottleneck lets its bytes go only at multiples of
        /// this (since `origin`), all that passed it meanwhile at once, as
        /// the link emulator does with its 1 ms ticks: returns come
        /// bunched.
        quantum: Option<Duration>,
        origin: Instant,
    }

    impl Path {
        fn new(rtt: Duration, rate: f64) -> Path {
            let now = Instant::now();
            Path {
                rtt,
                rate,
                free: now,
                quantum: None,
                origin: now,
            }
        }

        /// When a call of `bytes` sent at `at` returns.
        fn carry(&mut self, bytes: usize, at: Instant) -> Instant {
            let start = self.free.max(at);
            self.free = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            let passed = match self.quantum {
                Some(q) => {
                    let ticks = (self.free - self.origin).as_nanos().div_ceil(q.as_nanos());
                    self.origin + q * ticks as u32
                }
                None => self.free,
            };
            passed + self.rtt
        }
    }

    /// Streams `calls` calls of `bytes` over `path` as fast as the window
    /// lets it, returning the window after each round trip's worth of time
    /// and the longest a call waited in the bottleneck's queue after the
    /// first `settle` calls.
    fn stream(
        window: &mut AdaptiveWindow,
        path: &mut Path,
        calls: usize,
        bytes: usize,
        settle: usize,
    ) -> (Vec<usize>, Duration, Duration) {
        let start = Instant::now();
        path.free = start;
        path.origin = start;
        let mut now = start;
        let mut flying: std::collections::VecDeque<(Instant, Instant)> = Default::default();
        let mut windows = Vec::new();
        let mut worst_wait = Duration::ZERO;
        let mut next_sample = start;
        for i in 0..calls {
            while !window.ready(now) {
                let &(sent, back) = flying.front().expect("a call in flight");
                match window.wake_at(now) {
                    Some(at) if at < back => now = now.max(at),
                    _ => {
                        flying.pop_front();
                        now = now.max(back);
                        window.returned(bytes, sent, now);
                    }
                }
            }
            window.sent(bytes, now);
            let back = path.carry(bytes, now);
            if i >= settle {
                let wait =
                    back - now - path.rtt - Duration::from_secs_f64(bytes as f64 / path.rate);
                worst_wait = worst_wait.max(wait);
            }
            flying.push_back((now, back));
            if now >= next_sample {
                windows.push(window.window());
                next_sample = now + path.rtt;
            }
        }
        // The last calls return.
        let mut end = now;
        for (sent, back) in flying {
            end = end.max(back);
            window.returned(bytes, sent, end);
        }
        (windows, worst_wait, end - start)
    }

    #[test]
    fn the_window_reaches_the_bandwidth_delay_product_within_a_few_round_trips() {
        // 20 ms, 125 MB/s: a product of 2.5 MB.
        let mut path = Path::new(Duration::from_millis(20), 125e6);
        let mut window = AdaptiveWindow::new(Adaptive::default());
        let (windows, _, _) = stream(&mut window, &mut path, 2000, 65536, 0);
        assert!(windows.len() > 5);
        for w in &windows[3..] {
            assert!((2_500_000..3_000_000).contains(w), "{windows:?}");
        }
    }

    #[test]
    fn a_stream_fills_the_path_while_queueing_little() {
        for (rtt_ms, rate) in [(20, 125e6), (50, 250e6), (1, 2e9)] {
            let mut path = Path::new(Duration::from_millis(rtt_ms), rate);
            let mut window = AdaptiveWindow::new(Adaptive::default());
            let calls = 4000;
            let (_, worst, took) = stream(&mut window, &mut path, calls, 65536, 400);
            let moved = (calls * 65536) as f64 / took.as_secs_f64();
            assert!(moved > 0.9 * rate, "{rtt_ms} ms: {moved} of {rate}");
            let allowed = Duration::from_millis(1).max(path.rtt / 16) * 2;
            assert!(worst <= allowed, "{rtt_ms} ms: a call waited {worst:?}");
        }
    }

    #[test]
    fn a_path_that_returns_in_ticks_is_filled_without_overshooting_it() {
        // 50 ms, 250 MB/s (a product of 12.5 MB), whose bottleneck lets
        // its bytes go in 1 ms ticks.
        for (rtt_ms, rate) in [(50, 250e6), (20, 125e6)] {
            let mut path = Path::new(Duration::from_millis(rtt_ms), rate);
            path.quantum = Some(Duration::from_millis(1));
            let mut window = AdaptiveWindow::new(Adaptive::default());
            let (windows, worst, took) = stream(&mut window, &mut path, 4000, 65536, 400);
            let product = rate * (rtt_ms as f64 / 1000.0);
            let most = windows.iter().copied().max().unwrap_or(0) as f64;
            assert!(most < 1.15 * product, "{rtt_ms} ms: {windows:?}");
            // (A tick of bunching on top of the allowance.)
            let allowed =
                Duration::from_millis(1).max(path.rtt / 16) * 2 + Duration::from_millis(1);
            assert!(worst <= allowed, "{rtt_ms} ms: a call waited {worst:?}");
            let moved = (4000 * 65536) as f64 / took.as_secs_f64();
            assert!(moved > 0.85 * rate, "{rtt_ms} ms: {moved} of {rate}");
        }
    }

    #[test]
    fn when_the_bottleneck_slows_down_the_window_follows_it_down() {
        let mut window = AdaptiveWindow::new(Adaptive::default());
        let rtt = Duration::from_millis(20);
        let mut fast = Path::new(rtt, 125e6);
        stream(&mut window, &mut fast, 1000, 65536, 0);
        let before = window.window();
        // The same path at a quarter of the rate: 31 MB/s × 21 ms.
        let mut slow = Path::new(rtt, 31.25e6);
        let (_, worst, _) = stream(&mut window, &mut slow, 1000, 65536, 200);
        assert!(before > 2_500_000, "{before}");
        assert!(
            (600_000..750_000).contains(&window.window()),
            "{}",
            window.window()
        );
        assert!(worst <= Duration::from_millis(2), "a call waited {worst:?}");
    }

    #[test]
    fn the_window_stays_within_its_bounds_and_a_sender_with_little_to_send_keeps_it() {
        let settings = Adaptive::default().max_window(1 << 20);
        let mut window = AdaptiveWindow::new(settings);
        let mut path = Path::new(Duration::from_millis(50), 1e9);
        let (windows, _, _) = stream(&mut window, &mut path, 1000, 65536, 0);
        assert!(windows.iter().all(|&w| w <= 1 << 20), "{windows:?}");
        assert_eq!(window.window(), 1 << 20);
        // One small call a round trip uses none of the window: it stays.
        let start = Instant::now() + Duration::from_secs(1);
        for i in 0..10 {
            let at = start + Duration::from_millis(60 * i);
            window.sent(100, at);
            window.returned(100, at, at + Duration::from_millis(50));
        }
        assert_eq!(window.window(), 1 << 20);
    }

    #[test]
    fn the_shortest_round_trip_is_forgotten_after_its_horizon() {
        let mut least = RecentMin::default();
        let t = Instant::now();
        least.add(Duration::from_millis(5), t);
        least.add(Duration::from_millis(9), t + RTT_HORIZON);
        assert_eq!(least.get(), Some(Duration::from_millis(5)));
        least.add(Duration::from_millis(9), t + RTT_HORIZON * 2);
        assert_eq!(least.get(), Some(Duration::from_millis(9)));
    }
}
