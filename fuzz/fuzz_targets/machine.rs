//! The Machine parser and validator, on any bytes: a YAML stream
//! (`fabric validate`, `render`) and, when the bytes are JSON, the object
//! as the cluster holds it (the composition function's XR). A Machine the
//! validator accepts must render: the only refusals left are the ones about
//! keys given elsewhere.
#![no_main]

use fabric_cloudinit::{render, RenderError, RenderOptions};
use fabric_model::machine::{parse_stream, Parsed};
use fabric_model::Machine;
use libfuzzer_sys::fuzz_target;

fn check_renders(machine: &Machine) {
    match render(machine, None, &RenderOptions::default()) {
        Ok(seed) => {
            for (name, text) in seed.files() {
                assert!(!text.is_empty(), "{name} rendered empty");
            }
        }
        Err(RenderError::SecretKeysMissing { .. } | RenderError::NoKeys) => {}
        Err(e) => panic!("a valid machine did not render: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in parse_stream(text) {
        match parsed {
            Parsed::Machine(m) => check_renders(&m),
            Parsed::Invalid(diags) => assert!(!diags.is_empty(), "invalid without a diagnostic"),
            Parsed::NotAMachine { .. } => {}
        }
    }
    if let Ok(m) = Machine::from_yaml(text) {
        check_renders(&m);
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(m) = Machine::from_json(&json) {
            check_renders(&m);
        }
    }
});
