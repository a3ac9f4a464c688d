//! Who may call echotrace's servers (the HTTP API and Flight SQL): a token, checked in constant
//! time, and the rule that a server listening beyond loopback must have one.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Listening beyond this host without a token would open the server to the network.
    #[error(
        "refusing to listen on {listen} without a token: set {section}.token or {section}.token_file ({variable}), or listen on a loopback address"
    )]
    NoToken {
        /// The address asked for.
        listen: SocketAddr,
        /// The configuration section (`http`, `query`).
        section: &'static str,
        /// The environment variable that sets the token.
        variable: String,
    },
}

/// Fails when `listen` is not a loopback address and there is no token.
pub fn require_token_beyond_loopback(
    listen: SocketAddr,
    token: Option<&str>,
    section: &'static str,
) -> Result<(), AccessError> {
    if token.is_none() && !listen.ip().is_loopback() {
        let variable = format!("ECHOTRACE_{}__TOKEN", section.to_uppercase());
        return Err(AccessError::NoToken { listen, section, variable });
    }
    Ok(())
}

/// A server's token, from the `token` setting or the file `token_file` names (surrounding
/// whitespace ignored); `None` when neither is set. `section` names the settings in errors.
pub fn load_token(section: &str, token: &str, token_file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let token = match (token_file, token.is_empty()) {
        (Some(_), false) => anyhow::bail!("set {section}.token or {section}.token_file, not both"),
        (Some(path), true) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {section}.token_file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, _) => token.to_owned(),
    };
    if token.is_empty() {
        return Ok(None);
    }
    // It travels in a header: printable ASCII, no spaces.
    anyhow::ensure!(
        token.bytes().all(|b| b.is_ascii_graphic()),
        "the {section} token must be printable ASCII without spaces"
    );
    Ok(Some(token))
}

/// The token in an `authorization` header: a bearer token, or the password of basic credentials
/// (how the JDBC driver logs in to Flight SQL).
pub fn presented_token(header: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, value) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(value.trim().to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        // Padding is optional: Go's Flight client (ADBC) sends none.
        let encoded = value.trim().trim_end_matches('=');
        let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded).ok()?).ok()?;
        decoded.split_once(':').map(|(_user, password)| password.to_owned())
    } else {
        None
    }
}

/// Whether an `authorization` header presents `token`; compared without returning early, so the
/// time taken does not tell how much of a guess was right.
pub fn presents(header: Option<&str>, token: &str) -> bool {
    header.and_then(presented_token).is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn bearer_and_basic_credentials_present_the_token() {
        assert_eq!(presented_token("Bearer s3cret").as_deref(), Some("s3cret"));
        assert_eq!(presented_token("bearer s3cret").as_deref(), Some("s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("analyst:s3cret");
        assert_eq!(presented_token(&format!("Basic {basic}")).as_deref(), Some("s3cret"));
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("analyst:s3cret-token");
        assert_eq!(presented_token(&format!("Basic {unpadded}")).as_deref(), Some("s3cret-token"));
        assert_eq!(presented_token("Basic not-base64!"), None);
        assert_eq!(presented_token("Digest s3cret"), None);
        assert_eq!(presented_token("s3cret"), None);
        assert!(presents(Some("Bearer s3cret"), "s3cret"));
        assert!(!presents(Some("Bearer s3cre"), "s3cret"));
        assert!(!presents(None, "s3cret"));
    }

    #[test]
    fn beyond_loopback_a_token_is_required() {
        let public: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let error = require_token_beyond_loopback(public, None, "http").unwrap_err();
        assert!(error.to_string().contains("http.token") && error.to_string().contains("ECHOTRACE_HTTP__TOKEN"));
        assert!(require_token_beyond_loopback(public, Some("t"), "http").is_ok());
        assert!(require_token_beyond_loopback("127.0.0.1:9464".parse().unwrap(), None, "http").is_ok());
        assert!(require_token_beyond_loopback("[::1]:9464".parse().unwrap(), None, "http").is_ok());
    }
}
