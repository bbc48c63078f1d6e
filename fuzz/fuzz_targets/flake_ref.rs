//! The flake reference parser, and everything derived from an accepted
//! reference: the Git remote, the pinned reference, the installable.
//! An accepted reference must parse again from what it derives.
#![no_main]

use fabric_model::{FlakeRef, FlakeScheme};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let flake = match FlakeRef::parse(text) {
        Ok(flake) => flake,
        Err(e) => {
            for part in [e.message(), e.hint()] {
                assert!(
                    !part.contains(['\n', '\r']),
                    "a problem spans lines: {part:?}"
                );
            }
            return;
        }
    };
    assert_eq!(flake.as_str(), text);
    let _ = (
        flake.scheme(),
        flake.attr(),
        flake.git_ref(),
        flake.rev(),
        flake.dir(),
    );
    let _ = (flake.is_local_file(), flake.warnings(), flake.git_remote());
    let url = flake.without_attr();
    let _ = flake.toplevel_installable(&url);
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let pinned = flake.pinned(rev);
    // What the agent builds is the pinned URL with the same attribute.
    let again = FlakeRef::parse(&format!("{pinned}#{}", flake.attr())).unwrap_or_else(|e| {
        panic!(
            "{text:?} pinned to {pinned:?} does not parse: {}",
            e.message()
        )
    });
    assert_eq!(again.attr(), flake.attr(), "{text:?} -> {pinned:?}");
    assert_eq!(again.scheme(), flake.scheme(), "{text:?} -> {pinned:?}");
    if flake.scheme() != FlakeScheme::Tarball {
        assert_eq!(again.rev(), Some(rev), "{text:?} -> {pinned:?}");
        assert_eq!(again.dir(), flake.dir(), "{text:?} -> {pinned:?}");
    }
});
