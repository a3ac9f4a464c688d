//! The normalizer and the fingerprints: any text normalizes into non-empty tokens without
//! whitespace, and fingerprints the same every time.
#![no_main]

use echotrace_core::prepare::fingerprint::fingerprint;
use echotrace_core::link::minhash;
use echotrace_core::prepare::normalize::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let normalized = normalize(text);
    for (token, _) in normalized.tokens() {
        assert!(!token.is_empty() && !token.contains(char::is_whitespace), "token {token:?}");
    }
    let print = fingerprint(&normalized);
    assert_eq!(fingerprint(&normalize(text)).simhash, print.simhash, "deterministic");
    let _ = minhash::signature(&normalized);
});
