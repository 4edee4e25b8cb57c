//! Generates Rust code for every schema in `schema/`.
//!
//! The schema compiler runs in-process (`capnpc-embedded`), so no system
//! `capnp` tool is needed. The library itself uses only the RPC schemas; the
//! test and example schemas are generated here too so that `tests/` and
//! `examples/` can `include!` them from `OUT_DIR`.

const SCHEMAS: &[&str] = &[
    "schema/rpc.capnp",
    "schema/rpc-twoparty.capnp",
    "schema/stream.capnp",
    "schema/test.capnp",
    "schema/calculator.capnp",
    "schema/work.capnp",
];

/// Schemas with streaming methods (`-> stream`): the compiler imports the
/// standard `/capnp/stream.capnp` for them, whose ids are those of our own
/// copy, so they are compiled apart from it.
const STREAMING_SCHEMAS: &[&str] = &["schema/bench.capnp", "schema/streaming.capnp"];

fn main() {
    println!("cargo:rerun-if-changed=schema");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for schemas in [SCHEMAS, STREAMING_SCHEMAS] {
        let mut compile = capnpc_embedded::CompileCommand::new();
        compile.src_prefix("schema");
        for schema in schemas {
            compile.file(schema);
        }
        let request = compile.compile().expect("compiling the schemas in schema/");
        capnpc::codegen::CodeGenerationCommand::new()
            .output_directory(&out_dir)
            .run(&request[..])
            .expect("generating Rust code from the schemas");
    }
}
