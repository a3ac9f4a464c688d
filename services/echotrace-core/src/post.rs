//! The input contract: one post per Kafka message, as JSON (`schemas/post.v1.schema.json`).
//!
//! [`Post::from_json`] decodes and validates in one step and says exactly what is wrong, so that a bad
//! message can be dead-lettered with its reason. Unknown fields are tolerated and ignored.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Largest accepted `text`, in bytes (256 KiB: a long article fits, a runaway payload does not).
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Largest accepted message: the text's limit and 64 KiB for every other field.
pub const MAX_MESSAGE_BYTES: usize = MAX_TEXT_BYTES + 64 * 1024;
/// Largest accepted id (post or author), in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// How far past the consumer's wall clock a `created_at` may lie (clock skew between platforms).
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

/// A post from any platform, as it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    /// Platform-unique id, e.g. `bluesky:3kx2abc`.
    pub id: String,
    /// Platform name, e.g. `x`, `bluesky`, `weibo`.
    pub platform: String,
    /// Who posted it.
    pub author: Author,
    /// When the platform says it was posted (event time).
    pub created_at: DateTime<Utc>,
    /// The post's text; empty for a plain repost.
    pub text: String,
    /// Language tag, if the platform gives one.
    #[serde(default)]
    pub lang: Option<String>,
    /// URLs shared in the post.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Accounts mentioned in the post.
    #[serde(default)]
    pub mentions: Vec<String>,
    /// The post this one reposts.
    #[serde(default)]
    pub repost_of: Option<String>,
    /// The post this one quotes.
    #[serde(default)]
    pub quote_of: Option<String>,
    /// The post this one replies to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// The account behind a post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Author {
    /// Platform-unique account id.
    pub id: String,
    /// Display handle.
    pub handle: String,
    /// When the account was created, if known.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Follower count, if known.
    #[serde(default)]
    pub followers: Option<u64>,
    /// Whether the platform marks the account as automated.
    #[serde(default)]
    pub declared_automated: Option<bool>,
}

/// Why a message is not a valid post. The kind names are stable: they go into dead-letter headers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidPost {
    /// The bytes are not UTF-8.
    #[error("message is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    /// The bytes are not JSON, or the JSON is not a post object.
    #[error("message is not a JSON post: {0}")]
    InvalidJson(String),
    /// A required field is absent.
    #[error("required field `{0}` is missing")]
    MissingField(String),
    /// A field has the wrong type or an unacceptable value.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text or an id exceeds its size limit.
    #[error("field `{field}` is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The offending field.
        field: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// `created_at` is before 1990 or too far in the future.
    #[error("created_at {0} is outside the accepted range (1990 to 24 h after now)")]
    TimestampOutOfRange(DateTime<Utc>),
    /// The text is empty and the post is not a plain repost, so there is nothing to link.
    #[error("text is empty and there is no repost_of: nothing to link")]
    EmptyText,
}

impl InvalidPost {
    /// A short, stable name for the kind of error (used in headers and metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidPost::InvalidUtf8(_) => "invalid_utf8",
            InvalidPost::InvalidJson(_) => "invalid_json",
            InvalidPost::MissingField(_) => "missing_field",
            InvalidPost::InvalidField { .. } => "invalid_field",
            InvalidPost::TooLarge { .. } => "too_large",
            InvalidPost::TimestampOutOfRange(_) => "timestamp_out_of_range",
            InvalidPost::EmptyText => "empty_text",
        }
    }
}

impl Post {
    /// Decodes and validates a post against the wall clock.
    pub fn from_json(bytes: &[u8]) -> Result<Post, InvalidPost> {
        Post::from_json_at(bytes, Utc::now())
    }

    /// Decodes and validates a post, judging `created_at` against `now`.
    pub fn from_json_at(bytes: &[u8], now: DateTime<Utc>) -> Result<Post, InvalidPost> {
        let text = std::str::from_utf8(bytes).map_err(|e| InvalidPost::InvalidUtf8(e.valid_up_to()))?;
        // Check the size before decoding fields one by one, so a huge text costs one pass, not several.
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(InvalidPost::TooLarge { field: "message", size: bytes.len(), limit: MAX_MESSAGE_BYTES });
        }
        let post: Post = serde_json::from_str(text).map_err(classify_serde_error)?;
        post.validate(now)?;
        Ok(post)
    }

    /// Checks a decoded post against the contract ([`Post::from_json_at`] does, after decoding),
    /// judging `created_at` against `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), InvalidPost> {
        non_empty_id("id", &self.id)?;
        non_empty_id("author.id", &self.author.id)?;
        if self.platform.trim().is_empty() || self.platform.len() > 64 {
            return Err(invalid("platform", "must be 1 to 64 bytes"));
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(InvalidPost::TooLarge { field: "text", size: self.text.len(), limit: MAX_TEXT_BYTES });
        }
        for (field, value) in
            [("repost_of", &self.repost_of), ("quote_of", &self.quote_of), ("reply_to", &self.reply_to)]
        {
            if let Some(id) = value {
                non_empty_id(field, id)?;
                if *id == self.id {
                    return Err(invalid(field, "a post cannot reference itself"));
                }
            }
        }
        let earliest = Utc.with_ymd_and_hms(1990, 1, 1, 0, 0, 0).single().expect("valid date");
        if self.created_at < earliest || self.created_at > now + MAX_FUTURE_SKEW {
            return Err(InvalidPost::TimestampOutOfRange(self.created_at));
        }
        if self.text.trim().is_empty() && self.repost_of.is_none() {
            return Err(InvalidPost::EmptyText);
        }
        Ok(())
    }

    /// The explicit references of this post, strongest first.
    pub fn explicit_references(&self) -> impl Iterator<Item = (crate::records::EdgeKind, &str)> {
        use crate::records::EdgeKind;
        [(EdgeKind::Repost, &self.repost_of), (EdgeKind::Quote, &self.quote_of), (EdgeKind::Reply, &self.reply_to)]
            .into_iter()
            .filter_map(|(kind, id)| id.as_deref().map(|id| (kind, id)))
    }
}

fn non_empty_id(field: &str, id: &str) -> Result<(), InvalidPost> {
    if id.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(invalid(field, &format!("is {} bytes, over the limit of {MAX_ID_BYTES}", id.len())));
    }
    Ok(())
}

fn invalid(field: &str, reason: &str) -> InvalidPost {
    InvalidPost::InvalidField { field: field.to_owned(), reason: reason.to_owned() }
}

/// Turns serde's message into the error kinds of the contract.
fn classify_serde_error(error: serde_json::Error) -> InvalidPost {
    let message = error.to_string();
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return InvalidPost::MissingField(field.to_owned());
    }
    match error.classify() {
        serde_json::error::Category::Data => InvalidPost::InvalidField { field: field_hint(&message), reason: message },
        _ => InvalidPost::InvalidJson(message),
    }
}

/// serde names the type that failed, not the path; a readable hint is good enough for an operator.
fn field_hint(message: &str) -> String {
    if message.contains("premature end") || message.contains("input contains invalid characters") {
        "created_at".to_owned()
    } else {
        "post".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
    }

    const GOOD: &str = r#"{"id":"x:1","platform":"x","author":{"id":"u1","handle":"h"},
        "created_at":"2026-11-01T09:00:00Z","text":"hello","future_field":{"a":1}}"#;

    #[test]
    fn accepts_a_valid_post_and_ignores_unknown_fields() {
        let post = Post::from_json_at(GOOD.as_bytes(), now()).unwrap();
        assert_eq!(post.id, "x:1");
        assert_eq!(post.author.handle, "h");
        assert!(post.urls.is_empty());
    }

    fn kind_of(json: &[u8]) -> &'static str {
        Post::from_json_at(json, now()).unwrap_err().kind()
    }

    #[test]
    fn classifies_each_kind_of_bad_input() {
        assert_eq!(kind_of(b"{not json"), "invalid_json");
        assert_eq!(kind_of(b"{\"id\":\"\xff\xfe\"}"), "invalid_utf8");
        assert_eq!(
            kind_of(br#"{"id":"x:1","platform":"x","created_at":"2026-11-01T09:00:00Z","text":"t"}"#),
            "missing_field"
        );
        let future = GOOD.replace("2026-11-01T09:00:00Z", "3000-01-01T00:00:00Z");
        assert_eq!(kind_of(future.as_bytes()), "timestamp_out_of_range");
        let bad_time = GOOD.replace("2026-11-01T09:00:00Z", "yesterday");
        assert_eq!(kind_of(bad_time.as_bytes()), "invalid_field");
        let empty = GOOD.replace("\"hello\"", "\"  \"");
        assert_eq!(kind_of(empty.as_bytes()), "empty_text");
        let huge = GOOD.replace("hello", &"a".repeat(10 * 1024 * 1024));
        assert_eq!(kind_of(huge.as_bytes()), "too_large");
    }

    #[test]
    fn a_plain_repost_may_have_empty_text() {
        let repost = GOOD.replace("\"hello\"", "\"\",\"repost_of\":\"x:0\"");
        assert_eq!(Post::from_json_at(repost.as_bytes(), now()).unwrap().repost_of.as_deref(), Some("x:0"));
    }

    #[test]
    fn missing_field_names_the_field() {
        let err = Post::from_json_at(
            br#"{"id":"x:1","platform":"x","author":{"id":"u"},"created_at":"2026-11-01T09:00:00Z","text":"t"}"#,
            now(),
        )
        .unwrap_err();
        assert_eq!(err, InvalidPost::MissingField("handle".into()));
    }
}
