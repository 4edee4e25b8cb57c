//! Placeholder hooks: a cap table whose entry `i` stands for the index `i`.
//! Reading content imbued with such a table tells which cap-table entry a
//! capability pointer names, and copying it tells where each entry of the
//! copy came from, without making a hook per capability.
//!
//! Placeholders never leave this crate and are never called; if one were,
//! the call would fail, not panic.

use capnp::any_pointer;
use capnp::capability::{Promise, RemotePromise};
use capnp::private::capability::{
    ClientHook, ParamsHook, PipelineHook, PipelineOp, RequestHook, ResultsHook,
};
use capnp::private::layout::CapTable;
use capnp::MessageSize;

/// Stands for cap-table index `I`. Zero-sized, so a boxed one costs no
/// allocation: results and params carry few capabilities, and each copy
/// of content with capabilities makes a placeholder per capability.
struct Small<const I: usize>;

/// Stands for cap-table index `.0` (indexes past the small ones).
struct Large(usize);

/// Gives a boxed placeholder for `index`: a small one when there is one.
macro_rules! placeholder_for {
    ($index:expr; $($i:literal)*) => {
        match $index {
            $($i => Box::new(Small::<$i>) as Box<dyn ClientHook>,)*
            index => Box::new(Large(index)),
        }
    };
}

/// A placeholder for index `index`, to write a capability pointer with.
pub(crate) fn placeholder(index: usize) -> Box<dyn ClientHook> {
    placeholder_for!(index; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
}

/// A cap table of `len` placeholders, entry `i` standing for index `i`.
fn index_table(len: usize) -> CapTable {
    (0..len).map(|i| Some(placeholder(i))).collect()
}

/// Tables of up to this many placeholders are made once per thread.
const KEPT_TABLES: usize = 8;

thread_local! {
    /// This thread's small index tables, by length (made once: reading a
    /// capability pointer through one then costs no allocation).
    static TABLES: [CapTable; KEPT_TABLES + 1] = std::array::from_fn(index_table);
}

/// Runs `f` with a cap table of `len` placeholders, entry `i` standing for
/// index `i`.
pub(crate) fn with_index_table<T>(len: usize, mut f: impl FnMut(&CapTable) -> T) -> T {
    if len <= KEPT_TABLES {
        if let Ok(Some(result)) = TABLES.try_with(|tables| tables.get(len).map(&mut f)) {
            return result;
        }
    }
    // (A long table, or a thread being torn down: one made for the call.)
    f(&index_table(len))
}

/// The index a hook taken from an index table stands for. Only for
/// hooks read from content imbued with such a table: every hook there is a
/// placeholder, whose `get_ptr` is its index.
pub(crate) fn index_of(hook: &dyn ClientHook) -> usize {
    hook.get_ptr()
}

fn called() -> capnp::Error {
    capnp::Error::failed("a placeholder capability was called".into())
}

/// The hook of a placeholder type whose index `$index(self)` gives.
macro_rules! placeholder_hook {
    (impl $(<const $c:ident: usize>)? for $ty:ty, |$me:ident| $index:expr) => {
        impl$(<const $c: usize>)? ClientHook for $ty {
            fn add_ref(&self) -> Box<dyn ClientHook> {
                placeholder(self.get_ptr())
            }

            fn new_call(
                &self,
                _interface_id: u64,
                _method_id: u16,
                _size_hint: Option<MessageSize>,
            ) -> capnp::capability::Request<any_pointer::Owned, any_pointer::Owned> {
                capnp::capability::Request::new(Box::new(NoRequest(
                    capnp::message::Builder::new_default(),
                )))
            }

            fn call(
                &self,
                _interface_id: u64,
                _method_id: u16,
                _params: Box<dyn ParamsHook>,
                _results: Box<dyn ResultsHook>,
            ) -> Promise<(), capnp::Error> {
                Promise::err(called())
            }

            fn get_brand(&self) -> usize {
                0
            }

            fn get_ptr(&self) -> usize {
                let $me = self;
                $index
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
    };
}

placeholder_hook!(impl<const I: usize> for Small<I>, |_me| I);
placeholder_hook!(impl for Large, |me| me.0);

/// The request of a placeholder: sending it fails.
struct NoRequest(capnp::message::Builder<capnp::message::HeapAllocator>);

impl RequestHook for NoRequest {
    fn get(&mut self) -> any_pointer::Builder<'_> {
        self.0.init_root()
    }

    fn get_brand(&self) -> usize {
        0
    }

    fn send(self: Box<Self>) -> RemotePromise<any_pointer::Owned> {
        RemotePromise {
            promise: Promise::err(called()),
            pipeline: any_pointer::Pipeline::new(Box::new(NoPipeline)),
        }
    }

    fn send_streaming(self: Box<Self>) -> Promise<(), capnp::Error> {
        Promise::err(called())
    }

    fn tail_send(
        self: Box<Self>,
    ) -> Option<(u32, Promise<(), capnp::Error>, Box<dyn PipelineHook>)> {
        None
    }
}

/// The pipeline of a placeholder's request: placeholders again.
struct NoPipeline;

impl PipelineHook for NoPipeline {
    fn add_ref(&self) -> Box<dyn PipelineHook> {
        Box::new(NoPipeline)
    }

    fn get_pipelined_cap(&self, _ops: &[PipelineOp]) -> Box<dyn ClientHook> {
        placeholder(usize::MAX)
    }
}
