//! The composition function, on a RunFunctionRequest decoded from any
//! bytes (what a gRPC peer can send): run fresh and through the memo, the
//! two must agree, every message must be one line, and the response must
//! encode.
#![no_main]

use function_sdk_rust::proto::v1::RunFunctionRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = RunFunctionRequest::decode(data) else {
        return;
    };
    let fresh = fabric_function::run_uncached(&req);
    let remembered = fabric_function::run(&req);
    let again = fabric_function::run(&req);
    // NaN is not equal to itself, so a response that carries one (a NaN in
    // the context is passed through) cannot be compared.
    if !format!("{fresh:?}").contains("NaN") {
        assert_eq!(remembered, again, "the memo gave a different answer");
        assert_eq!(fresh, remembered, "the memo changed the answer");
    }
    // Crossplane shows these as events and conditions: one line each.
    let messages = fresh.results.iter().map(|r| r.message.as_str());
    let conditions = fresh.conditions.iter().filter_map(|c| c.message.as_deref());
    for message in messages.chain(conditions) {
        assert!(
            !message.contains(['\n', '\r']),
            "a message spans lines: {message:?}"
        );
    }
    let _ = fresh.encode_to_vec();
});
