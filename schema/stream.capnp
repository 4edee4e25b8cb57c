# capnp-actix's copy of the Cap'n Proto RPC schema `stream.capnp` (protocol version 1.0).
# Struct ids and field ordinals are the wire contract and match the reference exactly;
# see the reference schema for the protocol's full commentary.

@0x86c366a91393f3f8;

struct StreamResult @0x995f9a3377c0b16e {
}
