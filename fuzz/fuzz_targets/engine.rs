//! The whole engine driven by an arbitrary sequence of inputs: connections, frames, time.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kathon_core::testing::drive_engine(data);
});
