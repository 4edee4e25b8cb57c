"""A client for schema/test.capnp on pycapnp (the C++ reference): runs the
interop scenarios against our server, one PASS or FAIL line each, and exits
1 on any failure. Usage: test_client.py HOST:PORT SCHEMA"""

import asyncio
import gc
import sys

import capnp

test_capnp = capnp.load(sys.argv[2])


class Sequencer(test_capnp.Sequencer.Server):
    def __init__(self):
        self.count = 0

    async def next(self, expected, **kwargs):
        n = self.count
        self.count += 1
        if n != expected:
            raise Exception(f"call {expected} arrived as number {n}")
        return n


class Callback(test_capnp.Callback.Server):
    async def call(self, value, **kwargs):
        return value * 3


live = 0


class Counter(test_capnp.Counter.Server):
    def __init__(self, value):
        global live
        live += 1
        self.value = value

    def __del__(self):
        global live
        live -= 1

    async def increment(self, by, **kwargs):
        self.value += by
        return self.value


class Maker(test_capnp.Test.Server):
    async def delayedCounter(self, millis, start, **kwargs):
        await asyncio.sleep(millis / 1000)
        return Counter(start)


async def eventually(check, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if await check():
            return True
        await asyncio.sleep(0.01)
    return False


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=int(port))
    client = capnp.TwoPartyClient(stream)
    t = client.bootstrap().cast_as(test_capnp.Test)
    ok = True

    async def scenario(name, body):
        nonlocal ok
        try:
            problem = await body()
        except Exception as e:  # noqa: BLE001 - any failure is a FAIL line
            problem = f"error: {e}"
        if problem:
            ok = False
            print(f"FAIL {name}: {problem}", flush=True)
        else:
            print(f"PASS {name}", flush=True)

    async def echo():
        text = (await t.echo("hello")).text
        return None if text == "hello" else f"echo gave {text!r}"

    async def exceptions():
        for kind in ["failed", "overloaded", "disconnected", "unimplemented"]:
            try:
                await t.fail(kind=kind, reason=f"reason {kind}")
                return f"{kind}: no exception"
            except capnp.KjException as e:
                if str(e.type).lower() != kind:
                    return f"{kind}: arrived as {e.type}"
                if f"reason {kind}" not in str(e):
                    return f"{kind}: reason lost: {e}"
        return None

    async def caps():
        mine = Counter(100)
        back = (await t.echoCap(mine)).cap
        value = (await back.increment(1)).value
        if value != 101:
            return f"echoed cap gave {value}"
        counter = (await t.newCounter(5)).counter
        value = (await counter.increment(2)).value
        return None if value == 7 else f"server counter gave {value}"

    async def pipelining():
        counter = t.newCounter(40).counter
        first, second = counter.increment(1), counter.increment(1)
        a, b = (await first).value, (await second).value
        if (a, b) != (41, 42):
            return f"pipelined increments gave {(a, b)}"
        pair = t.nested().pair
        try:
            await pair.right.increment(1)
            return "a call on a null capability succeeded"
        except capnp.KjException:
            pass
        value = (await pair.left.increment(1)).value
        return None if value == 11 else f"left gave {value}"

    async def release():
        counter = (await t.newCounter(1)).counter
        if (await t.liveCounters()).count < 1:
            return "no live counter on the server"
        del counter
        gc.collect()

        async def released():
            return (await t.liveCounters()).count == 0

        return None if await eventually(released) else "the server still holds counters"

    async def cancellation():
        before = (await t.cancellations()).count
        hanging = t.hang()
        await asyncio.sleep(0.05)
        del hanging
        gc.collect()

        async def cancelled():
            return (await t.cancellations()).count == before + 1

        return None if await eventually(cancelled) else "the hanging call was not cancelled"

    async def embargo():
        seq = Sequencer()
        echoed = t.echoSeq(seq)
        promised = echoed.seq
        calls = [promised.next(i) for i in range(20)]
        await echoed
        calls += [promised.next(i) for i in range(20, 60)]
        for i, call in enumerate(calls):
            n = (await call).n
            if n != i:
                return f"call {i} came back as {n}"
        return None

    async def resolve_to_server():
        maker = test_capnp.Test._new_client(Maker())
        promise = maker.delayedCounter(50, 7).counter
        await t.hold(promise)
        first = (await t.callHeld(1)).value
        second = (await t.callHeld(1)).value
        await t.releaseHeld()
        return None if (first, second) == (8, 9) else f"held counter gave {(first, second)}"

    async def resolve_from_server():
        counter = (await t.promisedCounter(50, 3)).counter
        value = (await counter.increment(1)).value
        await asyncio.sleep(0.1)
        again = (await counter.increment(1)).value
        return None if (value, again) == (4, 5) else f"promised counter gave {(value, again)}"

    async def callback():
        result = (await t.callBack(Callback(), 7)).result
        return None if result == 21 else f"callback gave {result}"

    async def big():
        data = bytes(range(256)) * (5 * 4096)
        reply = await t.blob(data)
        return None if reply.size == len(data) and reply.data == data else "blob mismatch"

    await scenario("bootstrap and call", echo)
    await scenario("exceptions of each type", exceptions)
    await scenario("capabilities in params and results", caps)
    await scenario("promise pipelining", pipelining)
    await scenario("release", release)
    await scenario("cancellation by Finish", cancellation)
    await scenario("embargo ordering", embargo)
    await scenario("promise sent to the server resolves", resolve_to_server)
    await scenario("promise from the server resolves", resolve_from_server)
    await scenario("callback", callback)
    await scenario("messages of several MiB", big)
    sys.exit(0 if ok else 1)


asyncio.run(capnp.run(main()))
