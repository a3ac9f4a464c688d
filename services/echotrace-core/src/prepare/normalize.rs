//! Text normalization: the same text typed on two platforms must normalize to the same tokens.
//!
//! Steps, in order: Unicode NFKC (full-width forms, ligatures and compatibility characters fold to
//! their plain forms), lower-casing (Unicode's default case conversion, which is what case folding does
//! for every script we see in practice), URLs and @mentions removed, hashtag marks removed (the word
//! stays), apostrophes inside words dropped, everything that is not a letter or digit treated as a
//! separator (punctuation, emoji, symbols), so whitespace collapses for free.
//!
//! Two evasions are undone, because the people whose posts are fingerprinted choose the bytes:
//! invisible format characters (zero-width spaces and joiners, bidirectional controls, the soft
//! hyphen, variation selectors, tag characters) are dropped, so `sec\u{200B}retly` is `secretly`;
//! and in a word that mixes Latin letters with Cyrillic or Greek ones, the Cyrillic and Greek
//! letters that look like Latin ones are read as those (`sеcrеtly` with Cyrillic `е` is
//! `secretly`). Words wholly in Cyrillic or Greek are left alone. The table is this module's own:
//! Unicode's confusable skeleton (the `unicode-security` crate) also folds sequences within Latin
//! (`rn` to `m`, `l` to `I`) and would change the fingerprint of every text, not only of these.
//!
//! Latin and other space-separated scripts give word tokens; CJK text has no spaces, so each Han,
//! kana or Hangul character is a token of its own and [`crate::prepare::fingerprint`] shingles them into
//! character n-grams.

use std::ops::Range;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

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
    let folded = fold(text);
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

/// Invisible characters removed, NFKC, lower case.
fn fold(text: &str) -> String {
    // ASCII is already in NFKC, and its Unicode lower case is its ASCII lower case: most posts skip
    // the normalizer's tables (measured: a third of the time of a tweet's pipeline).
    if text.is_ascii() {
        let mut folded = text.to_ascii_lowercase();
        if folded.bytes().any(|b| is_invisible(char::from(b))) {
            folded.retain(|ch| !is_invisible(ch));
        }
        return folded;
    }
    // Most non-ASCII posts (Chinese, accented Latin) are in NFKC already, which the quick check
    // answers from one table lookup per character; the normalizer itself decomposes and recomposes
    // every character (4% of the lexical path's time on the dev streams, 70% of whose posts are
    // Weibo's, measured with perf).
    if !text.chars().any(is_invisible) && is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        return text.chars().flat_map(char::to_lowercase).collect();
    }
    // Invisible characters go first: removed after NFKC they could leave combining marks out of
    // canonical order, and the text would not normalize to itself (found by fuzzing).
    text.chars().filter(|ch| !is_invisible(*ch)).nfkc().flat_map(char::to_lowercase).collect()
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
    if chunk.is_ascii() {
        push_ascii_tokens(chunk.as_bytes(), out);
    } else {
        push_unicode_tokens(chunk, out);
    }
}

/// [`push_unicode_tokens`] for an ASCII chunk, byte by byte: no character decoding, no CJK, and no
/// look-alike letters to fold. Most of the dev streams' characters are in ASCII news articles;
/// normalizing all 87,247 posts took 138 ms with this path and 150 ms without (2026-12-07). A
/// property test holds it equal to the general path.
fn push_ascii_tokens(chunk: &[u8], out: &mut NormalizedText) {
    let mut word_start: Option<usize> = None;
    let mut skip_mention = false;
    for &byte in chunk {
        if skip_mention {
            if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.' {
                continue;
            }
            skip_mention = false;
        }
        if byte == b'\'' && word_start.is_some() {
            continue;
        }
        if byte.is_ascii_alphanumeric() {
            if word_start.is_none() {
                word_start = Some(out.text.len());
            }
            out.text.push(char::from(byte));
        } else {
            if let Some(start) = word_start.take() {
                out.tokens.push((start..out.text.len(), Script::Word));
            }
            skip_mention = byte == b'@';
        }
    }
    if let Some(start) = word_start {
        out.tokens.push((start..out.text.len(), Script::Word));
    }
}

/// Splits a chunk into word tokens and CJK characters.
fn push_unicode_tokens(chunk: &str, out: &mut NormalizedText) {
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
        fold_homoglyphs(start, out);
        out.tokens.push((start..out.text.len(), Script::Word));
    }
}

/// Rewrites the word at `start` (the end of `out.text`) with its Cyrillic and Greek look-alikes
/// read as Latin, when it mixes them with Latin letters.
fn fold_homoglyphs(start: usize, out: &mut NormalizedText) {
    let word = &out.text[start..];
    if word.is_ascii()
        || !word.bytes().any(|b| b.is_ascii_lowercase())
        || !word.chars().any(|ch| latin_look_alike(ch).is_some())
    {
        return;
    }
    let folded: String = word.chars().map(|ch| latin_look_alike(ch).unwrap_or(ch)).collect();
    out.text.truncate(start);
    out.text.push_str(&folded);
}

/// The Latin letter a lower-case Cyrillic or Greek letter is drawn like, if it is drawn like one.
fn latin_look_alike(ch: char) -> Option<char> {
    Some(match ch {
        'а' | 'α' => 'a',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'һ' => 'h',
        'і' | 'ι' | 'ӏ' => 'i',
        'ј' => 'j',
        'κ' => 'k',
        'о' | 'ο' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' => 'w',
        'х' | 'χ' => 'x',
        'у' => 'y',
        _ => return None,
    })
}

/// Characters that draw nothing and only split or steer text: control characters other than
/// whitespace, zero-width spaces and joiners, bidirectional controls, the soft hyphen, variation
/// selectors and tag characters.
fn is_invisible(ch: char) -> bool {
    matches!(ch as u32,
        0x00..=0x08 | 0x0E..=0x1F | 0x7F..=0x9F // control characters, not whitespace
        | 0x00AD               // soft hyphen
        | 0x034F               // combining grapheme joiner
        | 0x061C               // Arabic letter mark
        | 0x180E               // Mongolian vowel separator
        | 0x200B..=0x200F      // zero-width space, non-joiner, joiner; LRM, RLM
        | 0x202A..=0x202E      // bidirectional embeddings and overrides
        | 0x2060..=0x2064      // word joiner, invisible operators
        | 0x2066..=0x206F      // bidirectional isolates, deprecated format characters
        | 0xFE00..=0xFE0F      // variation selectors
        | 0xFEFF               // zero-width no-break space (byte order mark)
        | 0xE0000..=0xE007F) // tag characters
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn folding_skips_nfkc_only_where_it_changes_nothing(text in "\\PC{0,40}|[a-zA-Z\u{300}-\u{36F}\u{FF10}-\u{FF5A}\u{3000}-\u{30FF}\u{4E00}-\u{4E20}\u{200B}\u{FE0F} ]{0,20}") {
            let reference: String =
                text.chars().filter(|ch| !is_invisible(*ch)).nfkc().flat_map(char::to_lowercase).collect();
            prop_assert_eq!(fold(&text), reference);
        }
    }

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

    proptest! {
        #[test]
        fn the_ascii_path_tokenizes_as_the_general_one(chunk in "[ -~]{0,40}") {
            let (mut ascii, mut general) = (NormalizedText::default(), NormalizedText::default());
            push_ascii_tokens(chunk.as_bytes(), &mut ascii);
            push_unicode_tokens(&chunk, &mut general);
            prop_assert_eq!(ascii, general);
        }
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
    fn invisible_characters_and_look_alike_letters_do_not_hide_a_copy() {
        let original = normalize("Maintainer secretly rejected the safety patches");
        let zero_width =
            normalize("Main\u{200B}tainer sec\u{200D}retly re\u{2060}jected the\u{FEFF} safety\u{00AD} patches");
        let bidi = normalize("Maintainer \u{202E}secretly\u{202C} rejected the safety patches\u{FE0F}");
        let control = normalize("Maintainer se\u{1}cretly rejec\u{7f}ted the safety\u{0} patches");
        let look_alikes = normalize("Mаintainеr sеcrеtly rејеctеd thе sаfеty pаtchеs"); // Cyrillic а, е, ј
        let greek = normalize("Mαintαiner secretly rejected the sαfety pαtches");
        for copy in [zero_width, bidi, control, look_alikes, greek] {
            assert_eq!(copy.joined(), original.joined());
        }
        // Words wholly in Cyrillic or Greek stay as they are.
        assert_eq!(normalize("Сегодня в Москве").joined(), "сегодня в москве");
        assert_eq!(normalize("καλημέρα κόσμε").joined(), "καλημέρα κόσμε");
    }

    #[test]
    fn normalizing_a_normalized_text_changes_nothing() {
        // Found by fuzzing: NULs between combining marks, dropped after NFKC, left them unordered.
        for text in ["\u{2DA}\0\0\0\0\0\0\u{330}", "e\u{200B}\u{301}\u{316}", "İstanbul ǅ ﬁ"] {
            let once = normalize(text).joined();
            assert_eq!(normalize(&once).joined(), once, "{text:?}");
        }
    }

    #[test]
    fn mixed_scripts_keep_words_whole() {
        assert_eq!(tokens("FBI 承认"), ["fbi", "承", "认"]);
        assert_eq!(normalize("Hello,   world").joined(), "hello world");
    }
}
