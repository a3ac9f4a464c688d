//! The URL canonicalizer: any string gives a canonical URL or none, and a canonical URL is its own
//! canonical form.
#![no_main]

use echotrace_core::link::urls::{canonical_url, urls_in_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for url in urls_in_text(text).chain(std::iter::once(text)) {
        if let Some(canonical) = canonical_url(url) {
            assert_eq!(canonical_url(&canonical).as_deref(), Some(canonical.as_str()), "canonical twice");
        }
    }
});
