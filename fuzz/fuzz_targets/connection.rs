//! Drives two protocol cores (`capnp_actix_proto::connection`) wired to
//! each other in memory, with no runtime. The input is a program: each
//! byte picks what one side does next (bootstrap, call an import or a path
//! into a question, pipeline, let a question or an import go, answer a
//! call with capabilities of every kind, resolve a promise export, start
//! an embargo the peer's word calls for, reflect one, deliver a message).
//!
//! Honest programs (the first byte even): both sides follow the protocol,
//! so neither may ever find a protocol error in what the other sent, and
//! once every call is answered and everything let go, every table on both
//! sides is empty (no leaked question, answer, export, import or embargo).
//!
//! Hostile programs (the first byte odd): the rest of the input also holds
//! raw frames that side B receives as if from A. B must never panic; a
//! protocol error aborts it.
#![no_main]

use capnp_actix_proto::cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
use capnp_actix_proto::connection::pair::{Pair, Side, Test};
use capnp_actix_proto::connection::{Config, Connection, Event, Incoming, Outcome, Wants};
use capnp_actix_proto::embargo::Resolution;
use capnp_actix_proto::frame::{FrameDecoder, Limits};
use capnp_actix_proto::Error;
use libfuzzer_sys::fuzz_target;

/// What one side's application knows and may act on.
#[derive(Default)]
struct App {
    next_key: u64,
    /// Identities of exported capabilities: one per new capability.
    next_object: u64,
    /// Questions asked and not let go: (key, question id).
    questions: Vec<(u64, u32)>,
    /// Calls delivered and not answered: (answer id, results elsewhere).
    calls: Vec<u32>,
    /// Imports held.
    imports: Vec<u32>,
    /// Promise exports not resolved.
    promises: Vec<u32>,
    /// Embargoes the peer's word calls for: what to name.
    to_embargo: Vec<Embargo>,
    /// Reflections to send: (target, embargo id, waited on a path).
    to_reflect: Vec<(MessageTarget, u32, bool)>,
    /// Embargoes in force that we started.
    embargoes: usize,
    /// Set once this side found a protocol error (hostile input only).
    failed: bool,
}

enum Embargo {
    Import(u32),
    Path(u64, u16),
}

fn conn(pair: &mut Pair, side: Side) -> &mut Connection<Test> {
    pair.side(side)
}

/// Carries out what `side`'s core decided, as a runtime would.
fn run_events(pair: &mut Pair, side: Side, app: &mut App) {
    while let Some(event) = conn(pair, side).poll_event() {
        match event {
            Event::Bootstrap { question_id, .. } => {
                if conn(pair, side)
                    .start_answer(question_id, vec![vec![]], Wants::Results, 0)
                    .is_ok()
                {
                    app.calls.push(question_id);
                }
            }
            Event::Call(call) => {
                note_caps(app, &call.caps);
                if conn(pair, side)
                    .start_answer(call.question_id, Vec::new(), Wants::Results, call.bytes)
                    .is_ok()
                {
                    app.calls.push(call.question_id);
                }
            }
            Event::Refused { question_id, .. } => {
                let c = conn(pair, side);
                if c.start_answer(question_id, Vec::new(), Wants::Results, 0)
                    .is_ok()
                {
                    drop(c.returned(question_id, Default::default(), false));
                }
            }
            Event::Return {
                question_id,
                outcome,
                no_finish_needed,
                ..
            } => {
                let key = app
                    .questions
                    .iter()
                    .find(|(_, id)| *id == question_id)
                    .map(|(k, _)| *k);
                if let Outcome::Results { caps, .. } = &outcome {
                    note_caps(app, caps);
                    // A path that leads back here needs an embargo if calls
                    // went through the peer: say some did.
                    if let Some(key) = key {
                        for (i, cap) in caps.iter().enumerate() {
                            if matches!(cap, Incoming::Export(_) | Incoming::Answer(_)) {
                                app.to_embargo.push(Embargo::Path(key, i as u16));
                            }
                        }
                    }
                }
                if no_finish_needed {
                    app.questions.retain(|(_, id)| *id != question_id);
                }
            }
            Event::Resolve {
                promise_id,
                to,
                resolution,
            } => {
                if let Ok(incoming) = &to {
                    note_caps(app, std::slice::from_ref(incoming));
                }
                if resolution == Resolution::Reflected && app.imports.contains(&promise_id) {
                    app.to_embargo.push(Embargo::Import(promise_id));
                }
            }
            Event::Reflect { target, embargo_id } => {
                app.to_reflect.push((target, embargo_id, false));
            }
            Event::ReflectWhenSettled {
                target, embargo_id, ..
            } => app.to_reflect.push((target, embargo_id, true)),
            Event::EmbargoLifted(_) => app.embargoes -= 1,
            Event::Aborted(_) => app.failed = true,
            Event::Cancel { .. } | Event::AnswerEnded(_) | Event::Released(_) => {}
        }
    }
}

fn note_caps(app: &mut App, caps: &[Incoming]) {
    for cap in caps {
        if let Incoming::Import { id, .. } = cap {
            if !app.imports.contains(id) {
                app.imports.push(*id);
            }
        }
    }
}

/// A capability for `side` to send: of a kind picked by `pick`.
fn cap_to_send(pair: &mut Pair, side: Side, app: &mut App, pick: u8) -> CapDescriptor {
    app.next_object += 1;
    // Now and then the same capability again (T-04: the same export).
    let key = (app.next_object - u64::from(pick & 0x80 != 0 && app.next_object > 1)) * 8
        + u64::from(pick % 5);
    match pick % 5 {
        0 => CapDescriptor::None,
        1 => {
            let (id, _) = conn(pair, side).export(key, false, || format!("object {key}"));
            CapDescriptor::SenderHosted(id)
        }
        2 => {
            let (id, new) = conn(pair, side).export(key, true, || format!("promise {key}"));
            if new {
                app.promises.push(id);
            }
            CapDescriptor::SenderPromise(id)
        }
        3 => match app
            .imports
            .get(usize::from(pick / 5) % app.imports.len().max(1))
        {
            Some(&id) => CapDescriptor::ReceiverHosted(id),
            None => CapDescriptor::None,
        },
        _ => match app.questions.first() {
            Some(&(_, question_id)) => CapDescriptor::ReceiverAnswer(PromisedAnswer {
                question_id,
                transform: vec![],
            }),
            None => CapDescriptor::None,
        },
    }
}

/// One step of `side`'s program.
fn step(pair: &mut Pair, side: Side, app: &mut App, op: u8, arg: u8) -> Result<(), Error> {
    app.next_key += 1;
    let key = app.next_key + if side == Side::A { 0 } else { 1 << 32 };
    match op % 12 {
        0 => {
            let id = conn(pair, side).bootstrap(key, format!("bootstrap {key}"));
            app.questions.push((key, id));
        }
        1 | 2 => {
            let target = if op % 12 == 1 {
                match app.imports.get(usize::from(arg) % app.imports.len().max(1)) {
                    Some(&id) => MessageTarget::ImportedCap(id),
                    None => return Ok(()),
                }
            } else {
                match app
                    .questions
                    .get(usize::from(arg) % app.questions.len().max(1))
                {
                    Some(&(_, question_id)) => MessageTarget::PromisedAnswer(PromisedAnswer {
                        question_id,
                        transform: vec![0],
                    }),
                    None => return Ok(()),
                }
            };
            let cap = cap_to_send(pair, side, app, arg / 3);
            let id = pair.call(side, key, &target, &[cap]);
            app.questions.push((key, id));
        }
        3 => {
            if !app.questions.is_empty() {
                let (key, _) = app.questions.remove(usize::from(arg) % app.questions.len());
                conn(pair, side).question_dropped(key);
            }
        }
        4 => {
            if !app.imports.is_empty() {
                let id = app.imports.remove(usize::from(arg) % app.imports.len());
                // An embargo is started before the import goes, or never.
                app.to_embargo
                    .retain(|e| !matches!(e, Embargo::Import(i) if *i == id));
                let c = conn(pair, side);
                if let Some((_, generation)) = c.import_mut(id) {
                    c.import_dropped(id, generation);
                }
            }
        }
        5 | 6 => {
            if !app.calls.is_empty() {
                let id = app.calls.remove(usize::from(arg) % app.calls.len());
                let caps: Vec<_> = (0..arg % 3)
                    .map(|i| cap_to_send(pair, side, app, arg.wrapping_add(i * 7)))
                    .collect();
                if let Some(paths) = conn(pair, side).answer_mut(id) {
                    *paths = (0..caps.len() as u16).map(|i| vec![i]).collect();
                }
                pair.return_results(side, id, &caps);
                run_events(pair, side, app);
                while conn(pair, side).handle_waiting()? {
                    run_events(pair, side, app);
                }
            }
        }
        7 => {
            if !app.promises.is_empty() {
                let id = app.promises.remove(usize::from(arg) % app.promises.len());
                // As a runtime does: describe the resolution only if it goes
                // out (describing exports).
                if !conn(pair, side).awaits_resolve(id) {
                    return Ok(());
                }
                let to = match arg % 3 {
                    0 => Err(Error::failed("broken promise")),
                    _ => Ok(cap_to_send(pair, side, app, 1 + (arg % 2) * 2)),
                };
                let to = match to {
                    Ok(CapDescriptor::None) => Err(Error::failed("nothing")),
                    other => other,
                };
                conn(pair, side).resolve_export(id, to);
            }
        }
        8 => {
            if let Some(embargo) = app.to_embargo.pop() {
                let c = conn(pair, side);
                match embargo {
                    Embargo::Import(id) => {
                        if app.imports.contains(&id) {
                            c.embargo(MessageTarget::ImportedCap(id), "import".into());
                            app.embargoes += 1;
                        }
                    }
                    Embargo::Path(key, index) => {
                        if c.embargo_path(key, &[index], "path".into()).is_ok() {
                            app.embargoes += 1;
                        }
                    }
                }
            }
        }
        9 => {
            if let Some((target, id, waited)) = app.to_reflect.pop() {
                let c = conn(pair, side);
                c.reflect(&target, id);
                if waited {
                    c.reflection_done();
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Delivers one message from `from`, and runs the receiver's events.
fn deliver(pair: &mut Pair, from: Side, apps: &mut [App; 2]) -> Result<bool, Error> {
    let to = if from == Side::A { 1 } else { 0 };
    if std::env::var_os("TRACE").is_some() {
        let all: Vec<_> = std::iter::from_fn(|| pair.side(from).poll_transmit()).collect();
        if let Some(m) = all.first() {
            let mut v = Vec::new();
            capnp::serialize::write_message(&mut v, m).unwrap();
            let r = capnp::serialize::read_message(&mut &v[..], Default::default()).unwrap();
            let root: capnp_actix_proto::rpc_capnp::message::Reader = r.get_root().unwrap();
            eprintln!("{from:?} sends {:?}", root);
        }
        for m in all {
            pair.side(from).send(m);
        }
    }
    let moved = pair.deliver_one(from)?;

    let receiver = if from == Side::A { Side::B } else { Side::A };
    run_events(pair, receiver, &mut apps[to]);
    Ok(moved)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, program)) = data.split_first() else {
        return;
    };
    let hostile = mode & 1 == 1;
    // Bounds an honest peer never reaches in a short program, or small ones
    // a hostile peer runs into.
    let bound = if hostile { 64 } else { 1 << 16 };
    let config = Config {
        flow_limit: if mode & 2 == 2 { 64 } else { usize::MAX },
        max_answers: bound,
        max_imports: bound,
        max_reflections: if hostile { 8 } else { 1 << 16 },
        serves_bootstrap: mode & 4 == 0,
    };
    let mut pair = Pair::with_configs(config.clone(), config);
    let mut apps = [App::default(), App::default()];
    let (program, raw) = if hostile {
        program.split_at(program.len() / 2)
    } else {
        (program, &[][..])
    };
    let mut frames = FrameDecoder::new(Limits::default());
    frames.push(raw);
    for ops in program.chunks(3) {
        let [who, op, arg] = [ops[0], *ops.get(1).unwrap_or(&0), *ops.get(2).unwrap_or(&0)];
        let side = if who & 1 == 0 { Side::A } else { Side::B };
        let index = usize::from(side == Side::B);
        if apps[0].failed || apps[1].failed {
            break;
        }
        let result = if who & 2 == 2 {
            deliver(&mut pair, side, &mut apps).map(|_| ())
        } else {
            let r = step(&mut pair, side, &mut apps[index], op, arg);
            run_events(&mut pair, side, &mut apps[index]);
            r
        };
        if hostile && who & 0xF0 == 0xF0 {
            if let Ok(Some(frame)) = frames.next_frame() {
                if let Err(e) = pair.b.receive(frame) {
                    pair.b.abort(&e);
                    apps[1].failed = true;
                }
                run_events(&mut pair, Side::B, &mut apps[1]);
            }
        }
        if let Err(e) = result {
            assert!(hostile, "an honest peer was accused: {e}");
            pair.side(side).abort(&e);
            return;
        }
        assert!(pair.a.answers() <= bound && pair.b.answers() <= bound);
        assert!(pair.a.imports() <= bound && pair.b.imports() <= bound);
    }
    if hostile {
        return;
    }
    // Quiesce: answer every call, reflect every embargo, let everything go,
    // deliver everything; the tables must empty.
    for _ in 0..64 {
        let mut busy = false;
        for (index, side) in [(0, Side::A), (1, Side::B)] {
            let app = &mut apps[index];
            app.to_embargo.clear();
            while let Some(id) = app.calls.pop() {
                pair.return_results(side, id, &[]);
                busy = true;
            }
            run_events(&mut pair, side, app);
            while pair.side(side).handle_waiting().expect("honest") {
                run_events(&mut pair, side, app);
            }
            while let Some((target, id, waited)) = app.to_reflect.pop() {
                let c = pair.side(side);
                c.reflect(&target, id);
                if waited {
                    c.reflection_done();
                }
                busy = true;
            }
            for (key, _) in std::mem::take(&mut app.questions) {
                pair.side(side).question_dropped(key);
                busy = true;
            }
            for id in std::mem::take(&mut app.imports) {
                let c = pair.side(side);
                if let Some((_, generation)) = c.import_mut(id) {
                    c.import_dropped(id, generation);
                    busy = true;
                }
            }
            for id in std::mem::take(&mut app.promises) {
                pair.side(side)
                    .resolve_export(id, Err(Error::failed("done")));
            }
        }
        for side in [Side::A, Side::B] {
            while deliver(&mut pair, side, &mut apps).expect("honest peers never err") {
                busy = true;
            }
        }
        if !busy {
            break;
        }
    }
    for (name, c) in [("a", &pair.a), ("b", &pair.b)] {
        assert_eq!(c.questions(), 0, "{name}: questions left");
        assert_eq!(c.answers(), 0, "{name}: answers left");
        assert_eq!(c.imports(), 0, "{name}: imports left");
        let left: Vec<_> = (0..16)
            .filter_map(|id| c.export_refs(id).map(|r| (id, r)))
            .collect();
        assert_eq!(c.exports(), 0, "{name}: exports left: {left:?}");
        assert_eq!(c.embargoes(), 0, "{name}: embargoes left");
    }
});
