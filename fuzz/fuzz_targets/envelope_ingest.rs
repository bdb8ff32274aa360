//! Envelopes from a peer into a replica: decode, verify, chain, dependencies, the yrs update
//! check and apply, history ops. The input is split into envelopes at 0xff 0xfe.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kathon_core::testing::ingest_envelopes(data);
});
