//! The calculator server of the Cap'n Proto samples, on capnp-actix.
//!
//! `calculator-server ADDRESS [--workers N]` serves a `Calculator` on
//! ADDRESS (`HOST:PORT` or `unix:PATH`) with N worker threads (default: one
//! per core), until SIGINT or SIGTERM; then it stops gracefully (calls
//! running get 3 s to finish) and exits 0. Expressions may use results of earlier
//! calls (`Value`s, even ones not returned yet), functions defined with
//! `defFunction`, the arithmetic operators, and functions the client
//! implements (the server calls back).

mod calculator;

// The generated code names its types `crate::calculator_capnp::...`.
use calculator::calculator_capnp;
use calculator_capnp::calculator as calc;
use capnp::any_pointer;
use capnp::private::layout::CapTable;
use capnp_actix::{Capability, Server};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// A number, wrapped as a capability so it can feed later calls.
struct ValueImpl(f64);

impl calc::value::Server for ValueImpl {
    async fn read(
        self: Rc<Self>,
        _: calc::value::ReadParams,
        mut results: calc::value::ReadResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_value(self.0);
        Ok(())
    }
}

/// Evaluates `expression`, where `Parameter(i)` is `params[i]`.
fn evaluate<'a>(
    expression: calc::expression::Reader<'a>,
    params: &'a [f64],
) -> Pin<Box<dyn Future<Output = Result<f64, capnp::Error>> + 'a>> {
    Box::pin(async move {
        use calc::expression::Which;
        match expression.which()? {
            Which::Literal(value) => Ok(value),
            Which::PreviousResult(value) => {
                let reply = value?.read_request().send().promise.await?;
                Ok(reply.get()?.get_value())
            }
            Which::Parameter(index) => params
                .get(index as usize)
                .copied()
                .ok_or_else(|| capnp::Error::failed(format!("parameter {index} out of range"))),
            Which::Call(call) => {
                let function = call.get_function()?;
                let mut values = Vec::new();
                for param in call.get_params()?.iter() {
                    values.push(evaluate(param, params).await?);
                }
                let mut request = function.call_request();
                {
                    let mut list = request.get().init_params(values.len() as u32);
                    for (i, value) in values.iter().enumerate() {
                        list.set(i as u32, *value);
                    }
                }
                Ok(request.send().promise.await?.get()?.get_value())
            }
        }
    })
}

/// A function defined by the client: an expression over its parameters,
/// kept with the capabilities it names.
struct FunctionImpl {
    param_count: u32,
    /// The body, copied out of the `defFunction` params.
    body: capnp::message::Builder<capnp::message::HeapAllocator>,
    /// The capabilities the body refers to (Values, Functions).
    caps: CapTable,
}

impl FunctionImpl {
    fn new(param_count: u32, body: calc::expression::Reader<'_>) -> capnp::Result<Self> {
        let mut message = capnp::message::Builder::new_default();
        let mut caps = Vec::new();
        {
            let mut root: any_pointer::Builder = message.init_root();
            capnp::traits::ImbueMut::imbue_mut(&mut root, &mut caps);
            root.set_as(body)?;
        }
        Ok(FunctionImpl {
            param_count,
            body: message,
            caps,
        })
    }
}

impl calc::function::Server for FunctionImpl {
    async fn call(
        self: Rc<Self>,
        params: calc::function::CallParams,
        mut results: calc::function::CallResults,
    ) -> Result<(), capnp::Error> {
        let values: Vec<f64> = params.get()?.get_params()?.iter().collect();
        if values.len() != self.param_count as usize {
            return Err(capnp::Error::failed(format!(
                "expected {} parameters, got {}",
                self.param_count,
                values.len()
            )));
        }
        let mut root: any_pointer::Reader = self.body.get_root_as_reader()?;
        capnp::traits::Imbue::imbue(&mut root, &self.caps);
        let value = evaluate(root.get_as()?, &values).await?;
        results.get().set_value(value);
        Ok(())
    }
}

/// One of the four arithmetic operators.
struct OperatorImpl(calc::Operator);

impl calc::function::Server for OperatorImpl {
    async fn call(
        self: Rc<Self>,
        params: calc::function::CallParams,
        mut results: calc::function::CallResults,
    ) -> Result<(), capnp::Error> {
        let values = params.get()?.get_params()?;
        if values.len() != 2 {
            return Err(capnp::Error::failed("operators take two parameters".into()));
        }
        let (a, b) = (values.get(0), values.get(1));
        results.get().set_value(match self.0 {
            calc::Operator::Add => a + b,
            calc::Operator::Subtract => a - b,
            calc::Operator::Multiply => a * b,
            calc::Operator::Divide => a / b,
        });
        Ok(())
    }
}

struct CalculatorImpl;

impl calc::Server for CalculatorImpl {
    async fn evaluate(
        self: Rc<Self>,
        params: calc::EvaluateParams,
        mut results: calc::EvaluateResults,
    ) -> Result<(), capnp::Error> {
        let value = evaluate(params.get()?.get_expression()?, &[]).await?;
        results
            .get()
            .set_value(capnp_actix::new_client(ValueImpl(value)));
        Ok(())
    }

    async fn def_function(
        self: Rc<Self>,
        params: calc::DefFunctionParams,
        mut results: calc::DefFunctionResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let count = u32::try_from(params.get_param_count())
            .map_err(|_| capnp::Error::failed("negative parameter count".into()))?;
        let function = FunctionImpl::new(count, params.get_body()?)?;
        results.get().set_func(capnp_actix::new_client(function));
        Ok(())
    }

    async fn get_operator(
        self: Rc<Self>,
        params: calc::GetOperatorParams,
        mut results: calc::GetOperatorResults,
    ) -> Result<(), capnp::Error> {
        let op = params.get()?.get_op()?;
        results
            .get()
            .set_func(capnp_actix::new_client(OperatorImpl(op)));
        Ok(())
    }
}

#[actix::main]
async fn main() {
    let (endpoint, workers) = calculator::args("calculator-server", true);
    // A calculator per connection, made on the connection's worker: its
    // work (and that of the values and functions it hands out) runs there.
    let mut builder = Server::builder()
        .bootstrap_factory(|_| Capability::from_server::<calc::Client, _>(CalculatorImpl))
        .shutdown_on_signals(Duration::from_secs(3));
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    let server = match builder.listen(endpoint) {
        Ok(builder) => builder.start().await,
        Err(e) => Err(e),
    };
    let server = server.unwrap_or_else(|e| {
        eprintln!("calculator-server: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", server.endpoints()[0]);
    // Until SIGINT or SIGTERM, and the graceful stop they start.
    server.stopped().await;
}
