//! Every decoder of untrusted bytes in kathon-core: wire messages and frames, envelopes,
//! certificates, revocations, register values, document values, stored records, identity
//! bundles, yrs updates (the structural check), IDs, pairing codes, hex, the import formats and
//! the encodings the browser package's import/export module hands back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kathon_core::testing::decode_everything(data);
});
