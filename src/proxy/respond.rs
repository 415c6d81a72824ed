//! Writing the sidecar's own answers to the client, keeping the connection alive.

use crate::api::ApiResponse;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

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
