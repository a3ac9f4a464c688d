//! The rules-file parser: any text gives rules or a reason, never a panic.
#![no_main]

use echotrace_core::score::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = RuleSet::from_toml(text);
});
