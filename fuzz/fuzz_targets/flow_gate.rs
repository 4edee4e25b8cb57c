//! Drives the core's flow gate (`capnp_actix_proto::flow::FlowGate`) with
//! any sequence of inbound messages, call starts and returns, and checks it
//! against a model: what is parked leaves in arrival order, a call runs
//! only when it fits (or alone), a `Return` of ours never waits, parked
//! calls stay within the limit (plus the one that always finds room), and
//! the reader is held exactly while other parked messages pass their own bound.
#![no_main]

use capnp_actix_proto::flow::{Admit, FlowGate, Kind};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;

fuzz_target!(|data: &[u8]| {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let limit = usize::from(first % 64) + 1;
    let other_bound = usize::from(first / 64) * 64;
    let mut gate: FlowGate<(u64, Kind, usize)> = FlowGate::with_bounds(limit, other_bound);
    let mut running: Vec<usize> = Vec::new();
    let mut parked: VecDeque<(u64, Kind, usize)> = VecDeque::new();
    let mut next_id = 0u64;
    // A message handled (now, or released from the gate) starts running if
    // it is a call.
    let handle = |message: (u64, Kind, usize), running: &mut Vec<usize>| {
        if message.1 == Kind::Call {
            running.push(message.2);
        }
    };
    for pair in ops.chunks(2) {
        let op = pair[0];
        let size = usize::from(pair.get(1).copied().unwrap_or(0) % 80) + 1;
        let fits = |running: &Vec<usize>| {
            running.is_empty() || running.iter().sum::<usize>() + size <= limit
        };
        match op % 4 {
            kind @ 0..=2 => {
                let kind = [Kind::Call, Kind::Other, Kind::IndependentReturn][usize::from(kind)];
                let message = (next_id, kind, size);
                next_id += 1;
                let expect_now = match kind {
                    Kind::IndependentReturn => true,
                    Kind::Call => parked.is_empty() && fits(&running),
                    Kind::Other => parked.is_empty(),
                };
                let parked_calls: usize = parked
                    .iter()
                    .filter(|m| m.1 == Kind::Call)
                    .map(|m| m.2)
                    .sum();
                match gate.offer(message, kind, size) {
                    Admit::Now(m) => {
                        assert!(expect_now, "{kind:?} ran while it should wait");
                        assert_eq!(m, message);
                        if kind == Kind::Call {
                            gate.started(size);
                        }
                        handle(m, &mut running);
                    }
                    Admit::Parked => {
                        assert!(!expect_now, "{kind:?} waited while it could run");
                        parked.push_back(message);
                    }
                    Admit::Refuse(m) => {
                        assert_eq!(kind, Kind::Call, "only calls are refused");
                        assert!(!expect_now);
                        assert!(parked_calls > 0 && parked_calls + size > limit);
                        assert_eq!(m, message);
                    }
                }
            }
            _ => {
                // A running call returns; then what waited goes on.
                if !running.is_empty() {
                    let done = running.remove(usize::from(op) % running.len());
                    gate.returned(done);
                }
                while let Some(m) = gate.next_ready() {
                    assert_eq!(Some(m), parked.pop_front(), "out of arrival order");
                    if m.1 == Kind::Call {
                        gate.started(m.2);
                    }
                    handle(m, &mut running);
                }
                // What is left waits for a reason: a call at the front that
                // does not fit.
                if let Some(front) = parked.front() {
                    assert_eq!(front.1, Kind::Call, "a non-call waits for nothing");
                    assert!(!running.is_empty() && running.iter().sum::<usize>() + front.2 > limit);
                }
            }
        }
        assert_eq!(gate.running(), running.iter().sum::<usize>());
        let parked_calls: usize = parked
            .iter()
            .filter(|m| m.1 == Kind::Call)
            .map(|m| m.2)
            .sum();
        let parked_other: usize = parked
            .iter()
            .filter(|m| m.1 != Kind::Call)
            .map(|m| m.2)
            .sum();
        assert_eq!(gate.parked(), parked_calls + parked_other);
        let largest = parked.iter().map(|m| m.2).max().unwrap_or(0);
        assert!(
            parked_calls <= limit + largest,
            "parked calls over their bound"
        );
        assert_eq!(gate.reader_should_wait(), parked_other > other_bound);
    }
});
