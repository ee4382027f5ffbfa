//! libFuzzer target: see scanner_userspace::fuzzing::config_file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    scanner_userspace::fuzzing::config_file(data);
});
