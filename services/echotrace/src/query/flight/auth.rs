//! The token check of `echotrace serve-sql`: with a token configured, every call must present it,
//! as a bearer token or as the password of basic credentials (how the JDBC driver logs in).

use crate::access::presents;
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
        match presents(header.to_str().ok(), token) {
            true => Ok(request),
            false => Err(Status::unauthenticated("invalid token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "analyst:s3cret");
        assert!(auth.call(with(Some(&format!("Basic {basic}")))).is_ok());
    }
}
