//! The Machine parser and validator, on any bytes: a YAML stream
//! (`fabric validate`, `render`) and, when the bytes are JSON, the object
//! as the cluster holds it (the composition function's XR). A Machine the
//! validator accepts must render: the only refusals left are the ones about
//! keys given elsewhere.
#![no_main]

use fabric_cloudinit::{render, RenderError, RenderOptions};
use fabric_model::machine::{parse_stream, Parsed};
use fabric_model::{Diagnostic, Machine};
use libfuzzer_sys::fuzz_target;

/// One problem per line (the README's rule for every message): a newline
/// from the input or a hint would split a problem over lines.
fn check_one_line(diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "refused without a diagnostic");
    for d in diags {
        let line = d.to_string();
        assert!(
            !line.contains(['\n', '\r']),
            "a problem spans lines: {line:?}"
        );
    }
}

fn check_renders(machine: &Machine) {
    for w in &machine.warnings {
        let line = w.to_string();
        assert!(
            !line.contains(['\n', '\r']),
            "a warning spans lines: {line:?}"
        );
    }
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
            Parsed::Invalid(diags) => check_one_line(&diags),
            Parsed::NotAMachine { .. } => {}
        }
    }
    match Machine::from_yaml(text) {
        Ok(m) => check_renders(&m),
        Err(diags) => check_one_line(&diags),
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        match Machine::from_json(&json) {
            Ok(m) => check_renders(&m),
            Err(diags) => check_one_line(&diags),
        }
    }
});
