"""A pycapnp (C++ reference) client of a TailCaller from schema/test.capnp,
for our tail calls: it hosts the callee, so our server's tail call comes
back to it (Call with sendResultsTo.yourself, then our Return with
takeFromOtherQuestion). One PASS or FAIL line per check; exits 1 on any
failure. Usage: tail_client.py HOST:PORT SCHEMA"""

import asyncio
import sys

import capnp

test_capnp = capnp.load(sys.argv[2])

# The callee's results carry this much text: it should stay here.
PAD = 300_000


class Sequencer(test_capnp.Sequencer.Server):
    def __init__(self):
        self.count = 0

    async def next(self, expected, **kwargs):
        n = self.count
        self.count += 1
        if n != expected:
            raise Exception(f"call {expected} arrived as number {n}")
        return n


class Callee(test_capnp.TailCallee.Server):
    def __init__(self):
        self.calls = 0
        self.sequencer = Sequencer()

    async def foo(self, i, t, _context, **kwargs):
        self.calls += 1
        results = _context.results
        results.i = i
        results.t = t + "." * PAD
        results.c = self.sequencer


ok = True


def check(name, passed, detail=""):
    global ok
    print(("PASS " if passed else "FAIL ") + name + ("" if passed else f": {detail}"))
    ok = ok and passed


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    connection = await capnp.AsyncIoStream.create_connection(host=host, port=int(port))
    client = capnp.TwoPartyClient(connection)
    caller = client.bootstrap().cast_as(test_capnp.TailCaller)
    callee = Callee()
    promise = caller.foo(456, callee)
    # Pipelined on the answer before it returned.
    dependent0 = promise.c.next(0)
    response = await promise
    check("the tail call's results are the answer's", response.i == 456, response.i)
    check(
        "the text is the callee's",
        response.t == "from TailCaller" + "." * PAD,
        len(response.t),
    )
    dependent1 = response.c.next(1)
    n0 = (await dependent0).n
    n1 = (await dependent1).n
    check("calls pipelined on the answer follow the tail call", (n0, n1) == (0, 1), (n0, n1))
    check("the callee ran once", callee.calls == 1, callee.calls)
    sys.exit(0 if ok else 1)


asyncio.run(capnp.run(main()))
