# capnp-actix's copy of the Cap'n Proto RPC schema `rpc.capnp` (protocol version 1.0).
# Struct ids and field ordinals are the wire contract and match the reference exactly;
# see the reference schema for the protocol's full commentary.

@0xb312981b2552a250;

using QuestionId = UInt32;

using AnswerId = QuestionId;

using ExportId = UInt32;

using ImportId = ExportId;

struct Message {
  union {
    unimplemented @0 :Message;
    abort @1 :Exception;
    bootstrap @8 :Bootstrap;
    call @2 :Call;
    return @3 :Return;
    finish @4 :Finish;
    resolve @5 :Resolve;
    release @6 :Release;
    disembargo @13 :Disembargo;
    obsoleteSave @7 :AnyPointer;
    obsoleteDelete @9 :AnyPointer;
    provide @10 :Provide;
    accept @11 :Accept;
    join @12 :Join;
  }
}

struct Bootstrap {
  questionId @0 :QuestionId;
  deprecatedObjectId @1 :AnyPointer;
}

struct Call {
  questionId @0 :QuestionId;
  target @1 :MessageTarget;
  interfaceId @2 :UInt64;
  methodId @3 :UInt16;
  allowThirdPartyTailCall @8 :Bool = false;
  noPromisePipelining @9 :Bool = false;
  onlyPromisePipeline @10 :Bool = false;
  params @4 :Payload;
  sendResultsTo :union {
    caller @5 :Void;
    yourself @6 :Void;
    thirdParty @7 :RecipientId;
  }
}

struct Return {
  answerId @0 :AnswerId;
  releaseParamCaps @1 :Bool = true;
  noFinishNeeded @8 :Bool = false;
  union {
    results @2 :Payload;
    exception @3 :Exception;
    canceled @4 :Void;
    resultsSentElsewhere @5 :Void;
    takeFromOtherQuestion @6 :QuestionId;
    acceptFromThirdParty @7 :ThirdPartyCapId;
  }
}

struct Finish {
  questionId @0 :QuestionId;
  releaseResultCaps @1 :Bool = true;
  requireEarlyCancellationWorkaround @2 :Bool = true;
}

struct Resolve {
  promiseId @0 :ExportId;
  union {
    cap @1 :CapDescriptor;
    exception @2 :Exception;
  }
}

struct Release {
  id @0 :ImportId;
  referenceCount @1 :UInt32;
}

struct Disembargo {
  target @0 :MessageTarget;
  using EmbargoId = UInt32;
  context :union {
    senderLoopback @1 :EmbargoId;
    receiverLoopback @2 :EmbargoId;
    accept @3 :Void;
    provide @4 :QuestionId;
  }
}

struct Provide {
  questionId @0 :QuestionId;
  target @1 :MessageTarget;
  recipient @2 :RecipientId;
}

struct Accept {
  questionId @0 :QuestionId;
  provision @1 :ProvisionId;
  embargo @2 :Bool;
}

struct Join {
  questionId @0 :QuestionId;
  target @1 :MessageTarget;
  keyPart @2 :JoinKeyPart;
}

struct MessageTarget {
  union {
    importedCap @0 :ImportId;
    promisedAnswer @1 :PromisedAnswer;
  }
}

struct Payload {
  content @0 :AnyPointer;
  capTable @1 :List(CapDescriptor);
}

struct CapDescriptor {
  union {
    none @0 :Void;
    senderHosted @1 :ExportId;
    senderPromise @2 :ExportId;
    receiverHosted @3 :ImportId;
    receiverAnswer @4 :PromisedAnswer;
    thirdPartyHosted @5 :ThirdPartyCapDescriptor;
  }
  attachedFd @6 :UInt8 = 0xff;
}

struct PromisedAnswer {
  questionId @0 :QuestionId;
  transform @1 :List(Op);
  struct Op {
    union {
      noop @0 :Void;
      getPointerField @1 :UInt16;
    }
  }
}

struct ThirdPartyCapDescriptor {
  id @0 :ThirdPartyCapId;
  vineId @1 :ExportId;
}

struct Exception {
  reason @0 :Text;
  type @3 :Type;
  enum Type {
    failed @0;
    overloaded @1;
    disconnected @2;
    unimplemented @3;
  }
  obsoleteIsCallersFault @1 :Bool;
  obsoleteDurability @2 :UInt16;
  trace @4 :Text;
}

using SturdyRef = AnyPointer;

using ProvisionId = AnyPointer;

using RecipientId = AnyPointer;

using ThirdPartyCapId = AnyPointer;

using JoinKeyPart = AnyPointer;

using JoinResult = AnyPointer;
