//! The calculator client of the Cap'n Proto samples, on capnp-actix.
//!
//! `calculator-client ADDRESS` connects to a `Calculator` at ADDRESS
//! (`HOST:PORT` or `unix:PATH`) and runs the five standard checks, printing
//! one `PASS` or `FAIL` line each. It exits 0 when all pass, 1 when any
//! fails or the server cannot be reached, 2 on a usage error.
//!
//! Every check pipelines: each sends all its calls before waiting for any
//! answer, so it costs the round trips the protocol promises (one, or one
//! per call back to the client).

mod calculator;

// The generated code names its types `crate::calculator_capnp::...`.
use calculator::calculator_capnp;
use calculator_capnp::calculator as calc;
use std::rc::Rc;

/// A function the client implements: the server calls back to it.
struct PowerFunction;

impl calc::function::Server for PowerFunction {
    async fn call(
        self: Rc<Self>,
        params: calc::function::CallParams,
        mut results: calc::function::CallResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?.get_params()?;
        if params.len() != 2 {
            return Err(capnp::Error::failed("pow takes two parameters".into()));
        }
        results.get().set_value(params.get(0).powf(params.get(1)));
        Ok(())
    }
}

/// Sets `expression` to a call of `function` on `params`.
fn set_call(
    expression: calc::expression::Builder<'_>,
    function: &calc::function::Client,
    params: &[&dyn Fn(calc::expression::Builder<'_>)],
) {
    let mut call = expression.init_call();
    call.set_function(function.clone());
    let mut list = call.init_params(params.len() as u32);
    for (i, fill) in params.iter().enumerate() {
        fill(list.reborrow().get(i as u32));
    }
}

fn literal(value: f64) -> impl Fn(calc::expression::Builder<'_>) {
    move |mut e| e.set_literal(value)
}

fn parameter(index: u32) -> impl Fn(calc::expression::Builder<'_>) {
    move |mut e| e.set_parameter(index)
}

fn operator(calculator: &calc::Client, op: calc::Operator) -> calc::function::Client {
    let mut request = calculator.get_operator_request();
    request.get().set_op(op);
    request.send().pipeline.get_func()
}

async fn read(value: calc::value::Client) -> capnp::Result<f64> {
    Ok(value
        .read_request()
        .send()
        .promise
        .await?
        .get()?
        .get_value())
}

/// Check 1: a literal, evaluated and read back in one round trip.
async fn literal_check(calculator: &calc::Client) -> capnp::Result<f64> {
    let mut request = calculator.evaluate_request();
    request.get().init_expression().set_literal(123.0);
    let value = request.send().pipeline.get_value();
    read(value).await
}

/// Check 2: `123 + 45 - 67` with the server's operators, in one round trip.
async fn add_subtract_check(calculator: &calc::Client) -> capnp::Result<f64> {
    let add = operator(calculator, calc::Operator::Add);
    let subtract = operator(calculator, calc::Operator::Subtract);
    let mut request = calculator.evaluate_request();
    let inner =
        |e: calc::expression::Builder<'_>| set_call(e, &add, &[&literal(123.0), &literal(45.0)]);
    set_call(
        request.get().init_expression(),
        &subtract,
        &[&inner, &literal(67.0)],
    );
    read(request.send().pipeline.get_value()).await
}

/// Check 3: `4 * 6`, then that result (not yet returned) `+ 3`: two
/// evaluations pipelined, read in one round trip.
async fn pipelined_evaluations_check(calculator: &calc::Client) -> capnp::Result<(f64, f64)> {
    let add = operator(calculator, calc::Operator::Add);
    let multiply = operator(calculator, calc::Operator::Multiply);
    let mut request = calculator.evaluate_request();
    set_call(
        request.get().init_expression(),
        &multiply,
        &[&literal(4.0), &literal(6.0)],
    );
    let product = request.send().pipeline.get_value();
    let mut request = calculator.evaluate_request();
    let previous = product.clone();
    set_call(
        request.get().init_expression(),
        &add,
        &[
            &move |mut e: calc::expression::Builder<'_>| e.set_previous_result(previous.clone()),
            &literal(3.0),
        ],
    );
    let sum = request.send().pipeline.get_value();
    let (product, sum) = futures::join!(read(product), read(sum));
    Ok((product?, sum?))
}

/// Check 4: `f(x, y) = x * 100 + y` and `g(x) = f(x, x + 1) * 2`, defined on
/// the server; `f(12, 34)` and `g(21)`.
async fn functions_check(calculator: &calc::Client) -> capnp::Result<(f64, f64)> {
    let add = operator(calculator, calc::Operator::Add);
    let multiply = operator(calculator, calc::Operator::Multiply);

    let mut request = calculator.def_function_request();
    request.get().set_param_count(2);
    {
        let times_100 = |e: calc::expression::Builder<'_>| {
            set_call(e, &multiply, &[&parameter(0), &literal(100.0)])
        };
        set_call(
            request.get().init_body(),
            &add,
            &[&times_100, &parameter(1)],
        );
    }
    let f = request.send().pipeline.get_func();

    let mut request = calculator.def_function_request();
    request.get().set_param_count(1);
    {
        let x_plus_1 =
            |e: calc::expression::Builder<'_>| set_call(e, &add, &[&parameter(0), &literal(1.0)]);
        let f_of = |e: calc::expression::Builder<'_>| set_call(e, &f, &[&parameter(0), &x_plus_1]);
        set_call(
            request.get().init_body(),
            &multiply,
            &[&f_of, &literal(2.0)],
        );
    }
    let g = request.send().pipeline.get_func();

    let mut request = calculator.evaluate_request();
    set_call(
        request.get().init_expression(),
        &f,
        &[&literal(12.0), &literal(34.0)],
    );
    let f_value = request.send().pipeline.get_value();
    let mut request = calculator.evaluate_request();
    set_call(request.get().init_expression(), &g, &[&literal(21.0)]);
    let g_value = request.send().pipeline.get_value();
    let (f_value, g_value) = futures::join!(read(f_value), read(g_value));
    Ok((f_value?, g_value?))
}

/// Check 5: `pow(2, 4 + 5)` where `pow` is implemented here and called
/// back by the server.
async fn callback_check(calculator: &calc::Client) -> capnp::Result<f64> {
    let add = operator(calculator, calc::Operator::Add);
    let pow: calc::function::Client = capnp_actix::new_client(PowerFunction);
    let mut request = calculator.evaluate_request();
    let sum = |e: calc::expression::Builder<'_>| set_call(e, &add, &[&literal(4.0), &literal(5.0)]);
    set_call(
        request.get().init_expression(),
        &pow,
        &[&literal(2.0), &sum],
    );
    read(request.send().pipeline.get_value()).await
}

fn report<T: PartialEq + std::fmt::Debug>(
    name: &str,
    outcome: capnp::Result<T>,
    expected: T,
) -> bool {
    match outcome {
        Ok(value) if value == expected => {
            println!("PASS {name}");
            true
        }
        Ok(value) => {
            println!("FAIL {name}: got {value:?}, expected {expected:?}");
            false
        }
        Err(e) => {
            println!("FAIL {name}: {e}");
            false
        }
    }
}

#[actix::main]
async fn main() {
    let (endpoint, _) = calculator::args("calculator-client", false);
    let (conn, calculator) = match capnp_actix::connect::<calc::Client>(&endpoint).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("calculator-client: {e}");
            std::process::exit(1);
        }
    };
    let mut passed = true;
    passed &= report(
        "evaluating a literal",
        literal_check(&calculator).await,
        123.0,
    );
    passed &= report(
        "using add and subtract",
        add_subtract_check(&calculator).await,
        101.0,
    );
    passed &= report(
        "pipelining eval() calls",
        pipelined_evaluations_check(&calculator).await,
        (24.0, 27.0),
    );
    passed &= report(
        "defining functions",
        functions_check(&calculator).await,
        (1234.0, 4244.0),
    );
    passed &= report("using a callback", callback_check(&calculator).await, 512.0);
    conn.close().await;
    std::process::exit(if passed { 0 } else { 1 });
}
