//! What the client measures and how it reports it: the samples of a phase,
//! nearest-rank percentiles, and the one JSON result line (written by hand).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The bookkeeping of one phase (warm-up or timed) whose units may run
/// concurrently on one thread: how many started, each unit's duration, and
/// whether the deadline cut it short.
pub struct Phase {
    /// Units to start in all.
    total: u64,
    /// Once passed, no unit starts (`--seconds`).
    deadline: Option<Instant>,
    started: Cell<u64>,
    truncated: Cell<bool>,
    samples_ns: RefCell<Vec<u64>>,
    /// When the phase began.
    began: Instant,
}

impl Phase {
    /// A phase of `total` units beginning now; with a `cap` (seconds), no
    /// unit starts once that much time has passed.
    pub fn new(total: u64, cap: Option<f64>) -> Phase {
        let began = Instant::now();
        Phase {
            total,
            // A cap too large to represent is no cap.
            deadline: cap
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .and_then(|d| began.checked_add(d)),
            started: Cell::new(0),
            truncated: Cell::new(false),
            // Bounded, so that an absurd --calls fails later, not here.
            samples_ns: RefCell::new(Vec::with_capacity(total.min(1 << 22) as usize)),
            began,
        }
    }

    /// Units to start in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether a unit may start now: false once the deadline has passed
    /// (the phase is then truncated).
    pub fn may_start(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.truncated.set(true);
            return false;
        }
        true
    }

    /// Takes the next of the `total` units if one is left and the deadline
    /// allows it.
    pub fn claim(&self) -> bool {
        if self.started.get() >= self.total || !self.may_start() {
            return false;
        }
        self.started.set(self.started.get() + 1);
        true
    }

    /// Records a unit that started at `start` and completed now.
    pub fn record(&self, start: Instant) {
        let ns = start.elapsed().as_nanos() as u64;
        self.samples_ns.borrow_mut().push(ns);
    }

    /// The phase ended now.
    pub fn finish(self) -> Timed {
        Timed {
            secs: self.began.elapsed().as_secs_f64(),
            samples_ns: self.samples_ns.into_inner(),
            truncated: self.truncated.get(),
        }
    }
}

/// A finished timed phase.
pub struct Timed {
    /// Wall seconds from the phase's beginning to its end.
    pub secs: f64,
    /// One sample per completed unit, nanoseconds.
    pub samples_ns: Vec<u64>,
    /// Whether `--seconds` stopped it before all units started.
    pub truncated: bool,
}

impl Timed {
    /// Units completed.
    pub fn calls(&self) -> u64 {
        self.samples_ns.len() as u64
    }
}

/// Nearest-rank percentile in microseconds: the sample at rank
/// `ceil(q * n)` of the `n` sorted samples (0 when there are none).
pub fn percentile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1000.0
}

/// A JSON object on one line, keys in the order they are added. Keys and
/// string values are plain ASCII names, so nothing needs escaping.
pub struct JsonLine(String);

impl JsonLine {
    /// The common keys of every result line.
    pub fn result(impl_name: &str, workload: &str, mut timed: Timed, warmup: u64) -> JsonLine {
        timed.samples_ns.sort_unstable();
        let calls = timed.calls();
        let rate = if timed.secs > 0.0 {
            calls as f64 / timed.secs
        } else {
            0.0
        };
        let mut line = JsonLine(String::from("{"));
        line.string("impl", impl_name)
            .string("workload", workload)
            .int("calls", calls)
            .float("secs", timed.secs, 6)
            .float("calls_per_sec", rate, 1)
            .float("p50_us", percentile_us(&timed.samples_ns, 0.50), 3)
            .float("p99_us", percentile_us(&timed.samples_ns, 0.99), 3)
            .int("warmup", warmup)
            .boolean("truncated", timed.truncated);
        line
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":");
    }

    /// Adds a string.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        let _ = write!(self.0, "\"{value}\"");
        self
    }

    /// Adds an integer.
    pub fn int(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.0, "{value}");
        self
    }

    /// Adds a number with `digits` decimals (0 if it is not finite, which
    /// JSON cannot say).
    pub fn float(&mut self, key: &str, value: f64, digits: usize) -> &mut Self {
        self.key(key);
        let value = if value.is_finite() { value } else { 0.0 };
        let _ = write!(self.0, "{value:.digits$}");
        self
    }

    /// Adds a boolean.
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        let _ = write!(self.0, "{value}");
        self
    }

    /// The finished line, without a newline.
    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}
