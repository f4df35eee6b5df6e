//! Fuzz target: the fuzzer's bytes, decoded into allocator actions, run in lock step over up
//! to four threads against the shadow model that `tests/model.rs` also runs. Any broken
//! check panics, which the fuzzer reports as a crash with the input that caused it.

#![no_main]

#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    model::run_lanes(&model::decode(data));
});
