//! BERT's uncased WordPiece tokenization of ASCII text, with the ids `tokenizers` gives.
//!
//! `tokenizers` checks every character against the Unicode category tables (seven binary searches a
//! letter for "is it punctuation", more for "is it a control character"): measured on the dev mix,
//! those searches were about half the static encoder's time, more than the table lookups and
//! sums that make its vectors. For ASCII, which is 96% of the dev mix's texts, every one of those
//! questions has a one-instruction answer, so this module answers them directly and leaves any
//! other text to `tokenizers`. The rules are the library's, for the configuration the shipped
//! `tokenizer.json` has (BertNormalizer with clean_text and lowercase, BertPreTokenizer,
//! WordPiece): control characters other than tab, newline and carriage return are dropped, those
//! three become spaces, letters are lower-cased, words split at spaces, every ASCII punctuation
//! character is a word of its own, and each word is matched greedily longest-first against the
//! vocabulary, continuations with `##`, `[UNK]` for a word that does not match or is longer than
//! `max_input_chars_per_word`. A text that contains a special token's literal (`[CLS]` …) is left
//! to `tokenizers`, which matches those before normalizing. `tests/embedding.rs` checks that both
//! give the same ids.

use std::collections::HashMap;

/// The WordPiece vocabulary and its settings, read from the loaded tokenizer.
pub struct AsciiWordPiece {
    vocabulary: HashMap<String, u32>,
    unknown: u32,
    prefix: String,
    max_word_chars: usize,
    /// Literals that `tokenizers` matches as special tokens before normalizing.
    special: Vec<String>,
}

impl AsciiWordPiece {
    /// The fast path for `tokenizer`, if it is the WordPiece configuration this module reproduces.
    pub fn for_tokenizer(tokenizer: &tokenizers::Tokenizer) -> Option<AsciiWordPiece> {
        use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper};
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else { return None };
        let Some(NormalizerWrapper::BertNormalizer(normalizer)) = tokenizer.get_normalizer() else { return None };
        if !matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)))
            || !normalizer.clean_text
            || !normalizer.lowercase
        {
            return None;
        }
        let vocabulary = tokenizer.get_vocab(false);
        let unknown = *vocabulary.get(&model.unk_token)?;
        let special = tokenizer.get_added_tokens_decoder().into_values().map(|token| token.content).collect();
        Some(AsciiWordPiece {
            vocabulary,
            unknown,
            prefix: model.continuing_subword_prefix.clone(),
            max_word_chars: model.max_input_chars_per_word,
            special,
        })
    }

    /// The ids of `text`, or `None` when it is not ASCII or holds a special token's literal.
    pub fn tokenize(&self, text: &str) -> Option<Vec<u32>> {
        if !text.is_ascii() || self.special.iter().any(|literal| text.contains(literal.as_str())) {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 4);
        let (mut word, mut piece) = (String::new(), String::new());
        for byte in text.bytes() {
            match byte {
                b'\t' | b'\n' | b'\r' | b' ' => self.push_word(&mut word, &mut piece, &mut ids),
                0..=0x1f | 0x7f => {}
                _ if byte.is_ascii_punctuation() => {
                    self.push_word(&mut word, &mut piece, &mut ids);
                    word.push(byte as char);
                    self.push_word(&mut word, &mut piece, &mut ids);
                }
                _ => word.push(byte.to_ascii_lowercase() as char),
            }
        }
        self.push_word(&mut word, &mut piece, &mut ids);
        Some(ids)
    }

    /// Appends the word pieces of `word` (emptied) to `ids`; `piece` is scratch space.
    fn push_word(&self, word: &mut String, piece: &mut String, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.len() > self.max_word_chars {
            ids.push(self.unknown);
            word.clear();
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let found = loop {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocabulary.get(piece.as_str()) {
                    break Some(id);
                }
                end -= 1;
                if end == start {
                    break None;
                }
            };
            match found {
                Some(id) => ids.push(id),
                None => {
                    ids.truncate(first);
                    ids.push(self.unknown);
                    break;
                }
            }
            start = end;
        }
        word.clear();
    }
}
