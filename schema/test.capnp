# Interfaces for capnp-actix's scenario tests and examples.
@0xd6b1c6a95f3e2b71;

enum FailureKind {
  failed @0;
  overloaded @1;
  disconnected @2;
  unimplemented @3;
}

interface Counter {
  # A capability with state, passed around in params and results.
  increment @0 (by :Int64) -> (value :Int64);
  get @1 () -> (value :Int64);
}

interface Callback {
  # Implemented by the client; the server calls it during a call.
  call @0 (value :Int64) -> (result :Int64);
}

interface Sequencer {
  # Returns how many calls it received before this one (E-order tests).
  next @0 (expected :UInt32) -> (n :UInt32);
}

interface Test {
  # The main interface of the scenario tests.
  echo @0 (text :Text) -> (text :Text);
  fail @1 (kind :FailureKind, reason :Text) -> ();
  hang @2 () -> ();
  # Never returns by itself; only a Finish (cancellation) ends it.
  newCounter @3 (start :Int64) -> (counter :Counter);
  echoCap @4 (cap :Counter) -> (cap :Counter);
  callBack @5 (cb :Callback, value :Int64) -> (result :Int64);
  blob @6 (data :Data) -> (size :UInt64, data :Data);
  hold @7 (cap :Counter) -> ();
  callHeld @8 (by :Int64) -> (value :Int64);
  releaseHeld @9 () -> ();
  sequencer @10 () -> (seq :Sequencer);
  echoSeq @11 (seq :Sequencer) -> (seq :Sequencer);
  cancellations @12 () -> (count :UInt32);
  # How many `hang` calls were cancelled so far.
  nested @13 () -> (pair :Pair);
  delayedSeq @14 (seq :Sequencer, millis :UInt32) -> (seq :Sequencer);
  # Returns `seq` after a delay: a promise that settles later.
  holdSeq @15 (seq :Sequencer) -> ();
  callHeldSeq @16 (expected :UInt32) -> (n :UInt32);
  delayedCounter @17 (millis :UInt32, start :Int64) -> (counter :Counter);
  liveCounters @18 () -> (count :UInt32);
  # How many counters this server made are still alive (release checks).
  promisedCounter @19 (millis :UInt32, start :Int64) -> (counter :Counter);
  neverReturn @20 (cap :Counter) -> (capCopy :Counter);
  # Puts `cap` in its results and keeps it in its work, then never returns:
  # only a cancellation (Finish) ends it, which must release both.
  pipelineOnly @21 (start :Int64) -> (counter :Counter);
  # Sets `counter` (a new Counter at `start`), publishes the results for
  # pipelining (setPipeline), and never returns.
  # Returns at once a promise for a counter that exists only after a delay:
  # the caller gets a senderPromise, then a Resolve.
}

struct Pair {
  left @0 :Counter;
  right @1 :Counter;
}

interface TailCallee {
  # The callee of the tail-call tests (the C++ reference's
  # TestTailCallee): its results come back through a TailCaller.
  struct TailResult {
    i @0 :UInt32;
    t @1 :Text;
    c @2 :Sequencer;
  }
  foo @0 (i :Int32, t :Text) -> TailResult;
}

interface TailCaller {
  # Ends `foo` with a tail call: `callee.foo(i, "from TailCaller")`.
  foo @0 (i :Int32, callee :TailCallee) -> TailCallee.TailResult;
}
