//! The composition function, on a RunFunctionRequest decoded from any
//! bytes (what a gRPC peer can send): run fresh and through the memo, the
//! two must agree, and the response must encode.
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
    assert_eq!(remembered, again, "the memo gave a different answer");
    assert_eq!(fresh, remembered, "the memo changed the answer");
    let _ = fresh.encode_to_vec();
});
