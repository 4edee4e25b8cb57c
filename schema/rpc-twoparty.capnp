# capnp-actix's copy of the Cap'n Proto RPC schema `rpc-twoparty.capnp` (protocol version 1.0).
# Struct ids and field ordinals are the wire contract and match the reference exactly;
# see the reference schema for the protocol's full commentary.

@0xa184c7885cdaf2a1;

enum Side {
  server @0;
  client @1;
}

struct VatId {
  side @0 :Side;
}

struct ProvisionId {
  joinId @0 :UInt32;
}

struct RecipientId {}

struct ThirdPartyCapId {}

struct JoinKeyPart {
  joinId @0 :UInt32;
  partCount @1 :UInt16;
  partNum @2 :UInt16;
}

struct JoinResult {
  joinId @0 :UInt32;
  succeeded @1 :Bool;
  cap @2 :AnyPointer;
}
