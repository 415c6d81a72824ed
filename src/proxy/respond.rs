//! Writing the sidecar's own answers to the client, keeping the connection alive.

use crate::flavors::ApiResponse;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

/// Writes a complete response. Unlike pingora's `respond_error`, this keeps keep-alive.
pub async fn write(session: &mut Session, resp: &ApiResponse) -> Result<()> {
    let mut header = ResponseHeader::build(resp.status, Some(resp.headers.len() + 1))?;
    for (name, value) in &resp.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, resp.body.len())?;
    session
        .write_response_header(Box::new(header), resp.body.is_empty())
        .await?;
    if !resp.body.is_empty() {
        session
            .write_response_body(Some(resp.body.clone()), true)
            .await?;
    }
    Ok(())
}

/// The sidecar's own error shape for forwarded routes: `{"error": …, "message": …}`.
pub fn error(status: u16, error: &str, message: &str) -> ApiResponse {
    ApiResponse::json(status, &json!({ "error": error, "message": message }))
}

/// 429 with `Retry-After` (seconds).
pub fn rate_limited(retry_after_secs: u64) -> ApiResponse {
    error(429, "rate_limited", "Too many requests; retry later.").with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_secs.max(1)),
    )
}
