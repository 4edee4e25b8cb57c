"""A calculator server on pycapnp (the C++ reference): the peer our
calculator-client is checked against. Usage: calculator_server.py HOST:PORT
SCHEMA (PORT 0 picks a free port); prints "ready PORT" when listening."""

import asyncio
import sys

import capnp

calculator = capnp.load(sys.argv[2] if len(sys.argv) > 2 else "schema/calculator.capnp").Calculator


async def read_value(value):
    return (await value.read()).value


async def evaluate(expression, params=()):
    which = expression.which()
    if which == "literal":
        return expression.literal
    if which == "previousResult":
        return await read_value(expression.previousResult)
    if which == "parameter":
        return params[expression.parameter]
    if which == "call":
        args = await asyncio.gather(*(evaluate(p, params) for p in expression.call.params))
        reply = await expression.call.function.call(list(args))
        return reply.value
    raise ValueError(f"unknown expression kind {which}")


class Value(calculator.Value.Server):
    def __init__(self, value):
        self.value = value

    async def read(self, **kwargs):
        return self.value


class Function(calculator.Function.Server):
    def __init__(self, param_count, body):
        self.param_count = param_count
        self.body = body.as_builder()

    async def call(self, params, **kwargs):
        if len(params) != self.param_count:
            raise ValueError(f"expected {self.param_count} parameters, got {len(params)}")
        return await evaluate(self.body, list(params))


class Operator(calculator.Function.Server):
    def __init__(self, op):
        self.op = op

    async def call(self, params, **kwargs):
        a, b = params
        return {"add": a + b, "subtract": a - b, "multiply": a * b, "divide": a / b}[self.op]


class Calculator(calculator.Server):
    async def evaluate(self, expression, _context, **kwargs):
        return Value(await evaluate(expression))

    async def defFunction(self, paramCount, body, _context, **kwargs):
        return Function(paramCount, body)

    async def getOperator(self, op, **kwargs):
        return Operator(str(op))


async def main():
    host, port = sys.argv[1].rsplit(":", 1)

    async def serve(stream):
        await capnp.TwoPartyServer(stream, bootstrap=Calculator()).on_disconnect()

    server = await capnp.AsyncIoStream.create_server(serve, host, int(port))
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(capnp.run(main()))
