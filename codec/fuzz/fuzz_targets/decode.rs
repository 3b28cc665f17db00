//! Fuzz target: `codec::decode_valid` on arbitrary bytes must return (never panic, overflow the
//! stack, or read out of bounds under AddressSanitizer), and a valid request must hold its
//! invariants. Seeds: codec/tests/corpus/{valid,malformed}. Run with `scripts/fuzz.sh SECONDS`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = &codec::decode_valid(data) {
        let r = v.req();
        assert!(!v.id().is_empty());
        assert_eq!(v.imps().len(), r.imp.len());
        assert!(r.imp.len() <= codec::request::MAX_IMPS);
        for imp in v.imps() {
            assert!((0..=codec::money::MAX_CPM_MICROS).contains(&imp.floor.0));
        }
        let _ = (r.gdpr(), r.consent(), r.us_privacy(), r.gpp(), r.gpp_sid());
        let _ = (r.eids().len(), r.schain().map(|s| s.nodes.len()));
    }
});
