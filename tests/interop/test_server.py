"""A server for schema/test.capnp on pycapnp (the C++ reference), for the
interop scenarios our client runs. Usage: test_server.py HOST:PORT SCHEMA
(PORT 0 picks a free port); prints "ready PORT" when listening."""

import asyncio
import sys

import capnp

test_capnp = capnp.load(sys.argv[2])
live_counters = 0
cancellations = 0


class Counter(test_capnp.Counter.Server):
    def __init__(self, value):
        global live_counters
        live_counters += 1
        self.value = value

    def __del__(self):
        global live_counters
        live_counters -= 1

    async def increment(self, by, **kwargs):
        self.value += by
        return self.value

    async def get(self, **kwargs):
        return self.value


class Sequencer(test_capnp.Sequencer.Server):
    def __init__(self):
        self.count = 0

    async def next(self, expected, **kwargs):
        n = self.count
        self.count += 1
        if n != expected:
            raise Exception(f"call {expected} arrived as number {n}")
        return n


class Test(test_capnp.Test.Server):
    def __init__(self):
        self.held = None
        self.held_seq = None

    async def echo(self, text, **kwargs):
        return text

    async def fail(self, kind, reason, **kwargs):
        # pycapnp sends whatever a Python server raises as `failed`.
        raise Exception(reason)

    async def hang(self, **kwargs):
        global cancellations
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancellations += 1
            raise

    async def newCounter(self, start, **kwargs):
        return Counter(start)

    async def echoCap(self, cap, **kwargs):
        return cap

    async def callBack(self, cb, value, **kwargs):
        return (await cb.call(value)).result

    async def blob(self, data, _context, **kwargs):
        _context.results.size = len(data)
        _context.results.data = data

    async def hold(self, cap, **kwargs):
        self.held = cap

    async def callHeld(self, by, **kwargs):
        return (await self.held.increment(by)).value

    async def releaseHeld(self, **kwargs):
        self.held = None

    async def sequencer(self, **kwargs):
        return Sequencer()

    async def echoSeq(self, seq, **kwargs):
        return seq

    async def cancellations(self, **kwargs):
        return cancellations

    async def nested(self, _context, **kwargs):
        _context.results.pair.left = Counter(10)

    async def delayedSeq(self, seq, millis, **kwargs):
        await asyncio.sleep(millis / 1000)
        return seq

    async def holdSeq(self, seq, **kwargs):
        self.held_seq = seq

    async def callHeldSeq(self, expected, **kwargs):
        return (await self.held_seq.next(expected)).n

    async def delayedCounter(self, millis, start, **kwargs):
        await asyncio.sleep(millis / 1000)
        return Counter(start)

    async def liveCounters(self, **kwargs):
        return live_counters

    async def promisedCounter(self, millis, start, **kwargs):
        maker = test_capnp.Test._new_client(Test())
        return maker.delayedCounter(millis, start).counter


async def main():
    host, port = sys.argv[1].rsplit(":", 1)

    async def serve(stream):
        await capnp.TwoPartyServer(stream, bootstrap=Test()).on_disconnect()

    server = await capnp.AsyncIoStream.create_server(serve, host, int(port))
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(capnp.run(main()))
