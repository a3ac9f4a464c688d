//! The message decoder: any bytes give a post or a reason, never a panic; a post that decodes goes
//! through the detector.
#![no_main]

use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    if let Ok(post) = Post::from_json_at(data, now) {
        let mut detector = Detector::new(DetectorConfig::default());
        let _ = detector.process(post.clone());
        assert!(detector.process(post).is_none(), "the same id twice is a duplicate");
    }
});
