//! cargo-fuzz target `pack`: tests/fuzz/targets.rs says what it checks.
#![no_main]

#[path = "../../tests/fuzz/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::pack(data));
