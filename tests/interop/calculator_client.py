"""A calculator client on pycapnp (the C++ reference): runs the five standard
checks against our calculator-server. Prints PASS/FAIL per check, exits 1 on
any failure. Usage: calculator_client.py HOST:PORT SCHEMA"""

import asyncio
import sys

import capnp

calculator = capnp.load(sys.argv[2] if len(sys.argv) > 2 else "schema/calculator.capnp").Calculator


class Power(calculator.Function.Server):
    async def call(self, params, **kwargs):
        return params[0] ** params[1]


def call(function, *params):
    return {"call": {"function": function, "params": list(params)}}


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=int(port))
    client = capnp.TwoPartyClient(stream)
    calc = client.bootstrap().cast_as(calculator)
    ok = True

    def report(name, got, expected):
        nonlocal ok
        if got == expected:
            print(f"PASS {name}", flush=True)
        else:
            ok = False
            print(f"FAIL {name}: got {got!r}, expected {expected!r}", flush=True)

    async def check(name, coro, expected):
        try:
            report(name, await coro, expected)
        except Exception as e:  # noqa: BLE001 - any failure is a FAIL line
            report(name, f"error: {e}", expected)

    async def literal():
        return (await calc.evaluate({"literal": 123}).value.read()).value

    add = calc.getOperator(op="add").func
    subtract = calc.getOperator(op="subtract").func
    multiply = calc.getOperator(op="multiply").func

    async def add_subtract():
        expr = call(subtract, call(add, {"literal": 123}, {"literal": 45}), {"literal": 67})
        return (await calc.evaluate(expr).value.read()).value

    async def pipelined():
        product = calc.evaluate(call(multiply, {"literal": 4}, {"literal": 6})).value
        total = calc.evaluate(call(add, {"previousResult": product}, {"literal": 3})).value
        a, b = await asyncio.gather(product.read(), total.read())
        return (a.value, b.value)

    async def functions():
        f = calc.defFunction(
            paramCount=2,
            body=call(add, call(multiply, {"parameter": 0}, {"literal": 100}), {"parameter": 1}),
        ).func
        g = calc.defFunction(
            paramCount=1,
            body=call(multiply, call(f, {"parameter": 0}, call(add, {"parameter": 0}, {"literal": 1})), {"literal": 2}),
        ).func
        a = calc.evaluate(call(f, {"literal": 12}, {"literal": 34})).value
        b = calc.evaluate(call(g, {"literal": 21})).value
        ra, rb = await asyncio.gather(a.read(), b.read())
        return (ra.value, rb.value)

    async def callback():
        expr = call(Power(), {"literal": 2}, call(add, {"literal": 4}, {"literal": 5}))
        return (await calc.evaluate(expr).value.read()).value

    await check("evaluating a literal", literal(), 123.0)
    await check("using add and subtract", add_subtract(), 101.0)
    await check("pipelining eval() calls", pipelined(), (24.0, 27.0))
    await check("defining functions", functions(), (1234.0, 4244.0))
    await check("using a callback", callback(), 512.0)
    sys.exit(0 if ok else 1)


asyncio.run(capnp.run(main()))
