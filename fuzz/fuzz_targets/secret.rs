//! The Secret parser: authorized_keys lines from a Secret manifest's
//! `data` (base64) or `stringData`, on any bytes.
#![no_main]

use fabric_model::secret::keys_from_yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match keys_from_yaml(text, "admin-keys", "authorized_keys") {
        Ok(keys) => {
            for key in keys {
                // What rendering does with every key.
                let _ = (key.openssh(), key.fingerprint());
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "refused without a diagnostic");
            for d in diags {
                let line = d.to_string();
                assert!(
                    !line.contains(['\n', '\r']),
                    "a problem spans lines: {line:?}"
                );
            }
        }
    }
});
