//! Text normalization: the same text typed on two platforms must normalize to the same tokens.
//!
//! Steps, in order: Unicode NFKC (full-width forms, ligatures and compatibility characters fold to
//! their plain forms), lower-casing (Unicode's default case conversion, which is what case folding does
//! for every script we see in practice), URLs and @mentions removed, hashtag marks removed (the word
//! stays), apostrophes inside words dropped, everything that is not a letter or digit treated as a
//! separator (punctuation, emoji, symbols), so whitespace collapses for free.
//!
//! Latin and other space-separated scripts give word tokens; CJK text has no spaces, so each Han,
//! kana or Hangul character is a token of its own and [`crate::fingerprint`] shingles them into
//! character n-grams.

use std::ops::Range;
use unicode_normalization::UnicodeNormalization;

/// The script class of a token, which decides how it is shingled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// A word of a space-separated script (Latin, Cyrillic, Greek, Arabic, …).
    Word,
    /// A single Chinese, Japanese or Korean character.
    Cjk,
}

/// A normalized text: one string and the token spans inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NormalizedText {
    text: String,
    tokens: Vec<(Range<usize>, Script)>,
}

impl NormalizedText {
    /// The tokens, in order.
    pub fn tokens(&self) -> impl ExactSizeIterator<Item = (&str, Script)> + '_ {
        self.tokens.iter().map(|(range, script)| (&self.text[range.clone()], *script))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing is left after normalization.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens joined by single spaces: equal for texts that differ only in what normalization drops.
    pub fn joined(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        for (i, (token, _)) in self.tokens().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(token);
        }
        out
    }
}

/// Normalizes a post's text.
pub fn normalize(text: &str) -> NormalizedText {
    let mut out = NormalizedText { text: String::with_capacity(text.len()), tokens: Vec::new() };
    // ASCII is already in NFKC, and its Unicode lower case is its ASCII lower case: most posts skip
    // the normalizer's tables (measured: a third of the time of a tweet's pipeline).
    let folded: String =
        if text.is_ascii() { text.to_ascii_lowercase() } else { text.nfkc().flat_map(char::to_lowercase).collect() };
    for chunk in folded.split_whitespace() {
        if chunk.starts_with('@') || chunk.starts_with("www.") {
            continue;
        }
        // A URL may be glued to the text before it (common in CJK posts): cut it off there.
        let chunk = match url_start(chunk) {
            Some(at) => &chunk[..at],
            None => chunk,
        };
        push_tokens(chunk, &mut out);
    }
    out
}

/// Where the first `http://` or `https://` in a chunk starts. A byte scan: building a substring
/// searcher for every chunk cost more than the scan (measured).
fn url_start(chunk: &str) -> Option<usize> {
    let bytes = chunk.as_bytes();
    (0..bytes.len().saturating_sub(6)).find(|&at| {
        let rest = &bytes[at..];
        rest.starts_with(b"http://") || rest.starts_with(b"https://")
    })
}

fn push_tokens(chunk: &str, out: &mut NormalizedText) {
    let mut word_start: Option<usize> = None;
    let mut skip_mention = false;
    for ch in chunk.chars() {
        if skip_mention {
            // Inside an @mention glued to other text: skip it up to the next separator.
            if is_word_char(ch) || ch == '_' || ch == '.' {
                continue;
            }
            skip_mention = false;
        }
        if is_apostrophe(ch) && word_start.is_some() {
            continue;
        }
        if is_cjk(ch) {
            close_word(&mut word_start, out);
            let start = out.text.len();
            out.text.push(ch);
            out.tokens.push((start..out.text.len(), Script::Cjk));
        } else if is_word_char(ch) {
            if word_start.is_none() {
                word_start = Some(out.text.len());
            }
            out.text.push(ch);
        } else {
            close_word(&mut word_start, out);
            skip_mention = ch == '@';
        }
    }
    close_word(&mut word_start, out);
}

fn close_word(word_start: &mut Option<usize>, out: &mut NormalizedText) {
    if let Some(start) = word_start.take() {
        out.tokens.push((start..out.text.len(), Script::Word));
    }
}

fn is_word_char(ch: char) -> bool {
    ch.is_alphanumeric() || is_combining_mark(ch)
}

fn is_apostrophe(ch: char) -> bool {
    matches!(ch, '\'' | '\u{2019}' | '\u{02BC}')
}

/// Combining marks keep words of scripts such as Devanagari or Thai in one piece.
fn is_combining_mark(ch: char) -> bool {
    matches!(ch as u32, 0x0300..=0x036F | 0x0900..=0x0DFF | 0x0E31 | 0x0E34..=0x0E3A | 0x0E47..=0x0E4E)
}

/// Han ideographs, kana and Hangul: scripts written without spaces between words.
pub fn is_cjk(ch: char) -> bool {
    matches!(ch as u32,
        0x3040..=0x30FF        // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK Extension A
        | 0x4E00..=0x9FFF      // CJK Unified Ideographs
        | 0xAC00..=0xD7AF      // Hangul syllables
        | 0x1100..=0x11FF      // Hangul Jamo
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0x20000..=0x3134F) // Extensions B to G
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        normalize(text).tokens().map(|(t, _)| t.to_owned()).collect()
    }

    #[test]
    fn folds_case_width_and_punctuation() {
        assert_eq!(
            tokens("BREAKING:  The  Ｆｕｌｌ-width\tREPORT!!! 🚨"),
            ["breaking", "the", "full", "width", "report"]
        );
    }

    #[test]
    fn strips_urls_mentions_and_hashtag_marks() {
        assert_eq!(
            tokens("@dana look https://ex.com/a?utm_source=x #Breaking news (via @bot_1) www.ex.com"),
            ["look", "breaking", "news", "via"]
        );
        assert_eq!(tokens("don't won’t"), ["dont", "wont"]);
    }

    #[test]
    fn splits_cjk_into_characters_and_drops_glued_urls() {
        let text = normalize("外星人视频又被曝光http://t.cn/hgo3Ce 转发微博。");
        let got: Vec<_> = text.tokens().collect();
        assert_eq!(got.len(), 13);
        assert!(got.iter().all(|(_, script)| *script == Script::Cjk));
        assert_eq!(got[0].0, "外");
    }

    #[test]
    fn ascii_and_unicode_paths_agree() {
        assert_eq!(normalize("Hello WORLD, it's 9am").joined(), "hello world its 9am");
        assert_eq!(normalize("Hello WORLD, it’s 9am").joined(), "hello world its 9am");
        assert_eq!(tokens("see http://a.b/c"), ["see"]);
        assert_eq!(tokens("xhttp://a.b"), ["x"]);
        assert_eq!(tokens("http:/not-a-url"), ["http", "not", "a", "url"]);
    }

    #[test]
    fn mixed_scripts_keep_words_whole() {
        assert_eq!(tokens("FBI 承认"), ["fbi", "承", "认"]);
        assert_eq!(normalize("Hello,   world").joined(), "hello world");
    }
}
