//! The configuration file on arbitrary text: `Config::from_str` returns the
//! config or its errors, never panics.

#![no_main]

use std::path::Path;

use impulse::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(errors) = Config::from_str("fuzz.toml", text, Path::new("/")) {
        // Errors are reported to an operator: rendering them must not fail.
        let _ = errors.to_string();
    }
});
