//! The token check of `echotrace serve-sql`: with a token configured, every call must present it,
//! as a bearer token or as the password of basic credentials (how the JDBC driver logs in).

use base64::Engine;
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks every call's credentials against the token, when one is configured.
#[derive(Clone)]
pub(super) struct Authenticator {
    token: Option<Arc<str>>,
}

impl Authenticator {
    /// Requires `token` of every call, or nothing when it is `None`.
    pub(super) fn new(token: Option<&str>) -> Self {
        Authenticator { token: token.map(Arc::from) }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else { return Ok(request) };
        let Some(header) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "this server requires a token: send the header `authorization: Bearer <token>`, or log in with the token as password",
            ));
        };
        match header.to_str().ok().and_then(presented_token) {
            Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(request),
            _ => Err(Status::unauthenticated("invalid token")),
        }
    }
}

/// The token in an `authorization` header: a bearer token, or the password of basic credentials.
fn presented_token(header: &str) -> Option<String> {
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

/// Compares without returning early, so the time taken does not tell how much of a guess was right.
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
    }

    #[test]
    fn the_interceptor_requires_the_token() {
        let mut auth = Authenticator { token: Some(Arc::from("s3cret")) };
        let with = |header: Option<&str>| {
            let mut request = Request::new(());
            if let Some(header) = header {
                request.metadata_mut().insert("authorization", header.parse().unwrap());
            }
            request
        };
        assert!(auth.call(with(Some("Bearer s3cret"))).is_ok());
        assert_eq!(auth.call(with(Some("Bearer s3cre"))).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.call(with(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(Authenticator { token: None }.call(with(None)).is_ok());
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
