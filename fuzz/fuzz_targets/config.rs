//! The config loader on arbitrary text: every input is either a config or a
//! list of located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match tollgate::config::load_str(text, Some(std::path::Path::new("fuzz.toml")), std::path::Path::new("/nonexistent")) {
            Ok(cfg) => {
                let _ = cfg.named_files();
            }
            Err(e) => {
                assert!(!e.0.is_empty());
                let _ = e.to_string();
            }
        }
    }
});
