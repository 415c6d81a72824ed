//! The Tessitura wire codec (SPEC §4.3): request bodies in JSON, XML and form encoding in,
//! answers in JSON or DataContractSerializer-style XML out, and `Accept` negotiation. Only
//! bytes <-> typed values here; what the values mean is `tessitura.rs`'s job.
//!
//! The XML reader is deliberately small and suspicious: no DOCTYPE (so no DTD, no entity
//! definitions, no external entities), only the five predefined entities and character
//! references, and bounds on size, depth and element count.

use super::ApiResponse;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde::Serialize;
use serde_json::{Map, Value};

/// Namespace of the wrapper's envelopes (`ApiSuccessOf…`, `ApiFailure`).
pub const API_NS: &str = "http://schemas.datacontract.org/2004/07/SFMOMA.Data.Api";
/// Namespace of `TransferSessionRequest` and `TransferSessionResult` members.
pub const ENTITIES_NS: &str =
    "http://schemas.datacontract.org/2004/07/SFMOMA.Data.Entities.Session";
/// XML Schema instance namespace (`i:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// DataContractSerializer's name for `ApiSuccess<TransferSessionResult>`.
pub const SUCCESS_ROOT: &str = "ApiSuccessOfTransferSessionResult5WS87vwN";

/// Largest XML document read, whatever `server.max_body` allows: a real request is < 1 KiB.
pub const MAX_XML_BYTES: usize = 64 * 1024;
/// Deepest element nesting read (a real request has 2 levels).
pub const MAX_XML_DEPTH: usize = 16;
/// Most elements read (a real request has 3).
pub const MAX_XML_ELEMENTS: usize = 256;
/// Longest field value kept; session keys are at most 256 characters (SPEC §3).
const MAX_VALUE_CHARS: usize = 1024;

/// Why a request body could not be read: a 4xx in the flavour's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The body is broken or does not hold what the endpoint needs (400).
    Malformed(String),
    /// The `Content-Type` is not one the endpoint reads (415).
    UnsupportedMediaType(String),
}

impl WireError {
    fn malformed(msg: impl Into<String>) -> WireError {
        WireError::Malformed(msg.into())
    }
}

/// How a request body is encoded, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Xml,
    Form,
}

impl BodyEncoding {
    pub fn of(media_type: &str) -> Option<BodyEncoding> {
        match media_type {
            "application/json" | "text/json" => Some(BodyEncoding::Json),
            "application/xml" | "text/xml" => Some(BodyEncoding::Xml),
            "application/x-www-form-urlencoded" => Some(BodyEncoding::Form),
            _ => None,
        }
    }
}

/// `TransferSessionRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub session_key: String,
    pub reset_session_by_login: bool,
}

/// `SessionRequest` of `POST /Web/Session` (all optional; only `PromotionCode` is kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    pub promotion_code: Option<i64>,
}

const TRANSFER_MEDIA_TYPES: &str =
    "application/json, text/json, application/xml, text/xml or application/x-www-form-urlencoded";

/// Reads a `TransferSessionRequest` in whichever encoding `media_type` names.
pub fn parse_transfer_request(
    media_type: Option<&str>,
    body: &[u8],
) -> Result<TransferRequest, WireError> {
    let encoding = media_type.and_then(BodyEncoding::of).ok_or_else(|| {
        WireError::UnsupportedMediaType(format!(
            "The request Content-Type must be {TRANSFER_MEDIA_TYPES}."
        ))
    })?;
    let text = utf8_text(body)?;
    match encoding {
        BodyEncoding::Json => transfer_from_json(text),
        BodyEncoding::Xml => transfer_from_xml(text),
        BodyEncoding::Form => transfer_from_form(text),
    }
}

/// The body as text: UTF-8, without a byte order mark (.NET clients often send one).
fn utf8_text(body: &[u8]) -> Result<&str, WireError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    std::str::from_utf8(body)
        .map_err(|_| WireError::malformed("The request body is not valid UTF-8."))
}

fn required_key(key: Option<String>) -> Result<String, WireError> {
    key.filter(|k| !k.is_empty())
        .ok_or_else(|| WireError::malformed("SessionKey is required."))
}

/// A JSON object's member by name: the exact name, else the first that matches ignoring
/// case (Json.NET, which the original API uses, binds member names that way).
fn member<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A JSON object body. Single-quoted strings and names are fine, as behind the real API
/// (Json.NET; SPEC §13.7).
fn json_object(text: &str) -> Result<Map<String, Value>, WireError> {
    match serde_json::from_str::<Value>(&super::lenient_json::normalize(text)) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(WireError::malformed(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(WireError::malformed(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

fn transfer_from_json(text: &str) -> Result<TransferRequest, WireError> {
    if text.trim().is_empty() {
        return Err(WireError::malformed(
            "The request body is empty; SessionKey is required.",
        ));
    }
    let object = json_object(text)?;
    let session_key = match member(&object, "SessionKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(WireError::malformed("SessionKey must be a string.")),
    };
    let reset_session_by_login = match member(&object, "ResetSessionByLogin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(WireError::malformed(
                "ResetSessionByLogin must be true or false.",
            ))
        }
    };
    Ok(TransferRequest {
        session_key: required_key(session_key)?,
        reset_session_by_login,
    })
}

/// `a=b&c=d` with `+` as space and percent escapes; the first value of a name wins.
pub fn parse_form(text: &str) -> Result<Vec<(String, String)>, WireError> {
    fn decode(part: &str) -> Result<String, WireError> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| WireError::malformed("The form body is not valid UTF-8 once decoded."))
    }
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn transfer_from_form(text: &str) -> Result<TransferRequest, WireError> {
    let fields = parse_form(text.trim())?;
    // Form binding in the original API ignores case, like its JSON binding.
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.as_str())
    };
    let reset_session_by_login = match field("ResetSessionByLogin").map(str::trim) {
        None | Some("") => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return Err(WireError::malformed(
                "ResetSessionByLogin must be true or false.",
            ))
        }
    };
    Ok(TransferRequest {
        session_key: required_key(field("SessionKey").map(str::to_string))?,
        reset_session_by_login,
    })
}

/// Which member of `TransferSessionRequest` an element is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum XmlField {
    SessionKey,
    ResetSessionByLogin,
}

impl XmlField {
    fn name(self) -> &'static str {
        match self {
            XmlField::SessionKey => "SessionKey",
            XmlField::ResetSessionByLogin => "ResetSessionByLogin",
        }
    }
}

fn xml_error(e: impl std::fmt::Display) -> WireError {
    WireError::malformed(format!("The request body is not well-formed XML: {e}."))
}

/// Whether an element carries `i:nil="true"` (DataContractSerializer's null).
fn is_nil(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<bool, WireError> {
    for attr in start.attributes() {
        let attr = attr.map_err(xml_error)?;
        let (ns, local) = reader.resolver().resolve_attribute(attr.key);
        let in_xsi = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == XSI_NS.as_bytes());
        if in_xsi && local.as_ref() == b"nil" {
            let v = attr.value.trim_ascii();
            return Ok(v == b"true" || v == b"1");
        }
    }
    Ok(false)
}

/// Reads `<TransferSessionRequest xmlns="…SFMOMA.Data.Entities.Session">` with members
/// `ResetSessionByLogin` and `SessionKey` in that namespace, in any order. Unknown members
/// are skipped, as DataContractSerializer does.
fn transfer_from_xml(text: &str) -> Result<TransferRequest, WireError> {
    if text.len() > MAX_XML_BYTES {
        return Err(WireError::malformed(format!(
            "The XML document is larger than {MAX_XML_BYTES} bytes."
        )));
    }
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;

    let mut depth = 0usize;
    let mut elements = 0usize;
    let mut root_seen = false;
    let mut root_closed = false;
    // The member being read (depth 2), and its text so far.
    let mut current: Option<XmlField> = None;
    let mut value = String::new();
    let mut session_key: Option<Option<String>> = None;
    let mut reset: Option<bool> = None;

    loop {
        let (ns, event) = reader.read_resolved_event().map_err(xml_error)?;
        let in_entities_ns =
            matches!(ns, ResolveResult::Bound(n) if n.as_ref() == ENTITIES_NS.as_bytes());
        if let ResolveResult::Unknown(prefix) = ns {
            return Err(WireError::malformed(format!(
                "The XML uses the undeclared namespace prefix {:?}.",
                String::from_utf8_lossy(&prefix)
            )));
        }
        match event {
            Event::DocType(_) => {
                return Err(WireError::malformed(
                    "DOCTYPE declarations are not allowed in the request body.",
                ));
            }
            Event::Decl(decl) => {
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(xml_error)?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(WireError::malformed("The XML must be encoded in UTF-8."));
                    }
                }
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                if root_closed {
                    return Err(WireError::malformed(
                        "The XML has more than one root element.",
                    ));
                }
                elements += 1;
                depth += 1;
                if elements > MAX_XML_ELEMENTS {
                    return Err(WireError::malformed(format!(
                        "The XML has more than {MAX_XML_ELEMENTS} elements."
                    )));
                }
                if depth > MAX_XML_DEPTH {
                    return Err(WireError::malformed(format!(
                        "The XML is nested deeper than {MAX_XML_DEPTH} levels."
                    )));
                }
                let local = start.local_name();
                match depth {
                    1 => {
                        if !in_entities_ns || local.as_ref() != b"TransferSessionRequest" {
                            return Err(WireError::malformed(format!(
                                "The XML root element must be TransferSessionRequest in namespace {ENTITIES_NS}."
                            )));
                        }
                        root_seen = true;
                    }
                    2 if in_entities_ns => {
                        let field = match local.as_ref() {
                            b"SessionKey" => Some(XmlField::SessionKey),
                            b"ResetSessionByLogin" => Some(XmlField::ResetSessionByLogin),
                            _ => None,
                        };
                        if let Some(f) = field {
                            let seen = match f {
                                XmlField::SessionKey => session_key.is_some(),
                                XmlField::ResetSessionByLogin => reset.is_some(),
                            };
                            if seen {
                                return Err(WireError::malformed(format!(
                                    "{} appears more than once.",
                                    f.name()
                                )));
                            }
                            if is_nil(&reader, start)? {
                                // A nil member is an absent one; mark it seen.
                                match f {
                                    XmlField::SessionKey => session_key = Some(None),
                                    XmlField::ResetSessionByLogin => reset = Some(false),
                                }
                                if !empty {
                                    current = None;
                                }
                            } else {
                                current = Some(f);
                                value.clear();
                            }
                        }
                    }
                    3.. if current.is_some() => {
                        let name = current.map_or("", XmlField::name);
                        return Err(WireError::malformed(format!(
                            "{name} must hold text, not elements."
                        )));
                    }
                    _ => {}
                }
                if empty {
                    depth -= 1;
                    if depth == 0 {
                        root_closed = true;
                    }
                    if depth == 1 {
                        if let Some(f) = current.take() {
                            store_xml_field(f, "", &mut session_key, &mut reset)?;
                        }
                    }
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some(f) = current.take() {
                        store_xml_field(f, &value, &mut session_key, &mut reset)?;
                    }
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    root_closed = true;
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(xml_error)?;
                append_text(depth, current.is_some(), &mut value, &t)?;
            }
            Event::CData(t) => {
                let t = t.decode().map_err(xml_error)?;
                if depth == 0 {
                    return Err(WireError::malformed(
                        "The XML has character data outside its root element.",
                    ));
                }
                append_text(depth, current.is_some(), &mut value, &t)?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(xml_error)?
                } else {
                    match &*r {
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"amp" => Some('&'),
                        b"apos" => Some('\''),
                        b"quot" => Some('"'),
                        _ => None,
                    }
                };
                let Some(c) = resolved else {
                    return Err(WireError::malformed(format!(
                        "The XML refers to the undefined entity &{};.",
                        String::from_utf8_lossy(&r)
                    )));
                };
                if depth == 0 {
                    return Err(WireError::malformed(
                        "The XML has character data outside its root element.",
                    ));
                }
                append_text(
                    depth,
                    current.is_some(),
                    &mut value,
                    c.encode_utf8(&mut [0; 4]),
                )?;
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !root_seen || depth != 0 {
        return Err(WireError::malformed("The XML document is incomplete."));
    }
    Ok(TransferRequest {
        session_key: required_key(session_key.flatten())?,
        reset_session_by_login: reset.unwrap_or(false),
    })
}

/// Adds character data to the member being read; elsewhere only whitespace is allowed,
/// except inside unknown members, whose content is skipped.
fn append_text(
    depth: usize,
    reading: bool,
    value: &mut String,
    text: &str,
) -> Result<(), WireError> {
    if reading && depth == 2 {
        if value.len() + text.len() > MAX_VALUE_CHARS {
            return Err(WireError::malformed("A value in the XML is too long."));
        }
        value.push_str(text);
        Ok(())
    } else if depth <= 1 && !text.trim().is_empty() {
        Err(WireError::malformed(
            "The XML has character data outside the request's members.",
        ))
    } else {
        Ok(())
    }
}

fn store_xml_field(
    field: XmlField,
    text: &str,
    session_key: &mut Option<Option<String>>,
    reset: &mut Option<bool>,
) -> Result<(), WireError> {
    match field {
        XmlField::SessionKey => *session_key = Some(Some(text.trim().to_string())),
        // xs:boolean: true, false, 1, 0 (surrounding whitespace allowed).
        XmlField::ResetSessionByLogin => {
            *reset = Some(match text.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(WireError::malformed(
                        "ResetSessionByLogin must be true or false.",
                    ))
                }
            })
        }
    }
    Ok(())
}

/// Reads a `SessionRequest` (JSON; an empty body, `{}` or `null` is fine).
pub fn parse_create_request(
    media_type: Option<&str>,
    body: &[u8],
) -> Result<CreateRequest, WireError> {
    let text = utf8_text(body)?;
    if text.trim().is_empty() {
        return Ok(CreateRequest::default());
    }
    require_json(media_type)?;
    if text.trim() == "null" {
        return Ok(CreateRequest::default());
    }
    let object = json_object(text)?;
    let int = |name: &str| -> Result<Option<i64>, WireError> {
        match member(&object, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|v| i32::try_from(*v).is_ok())
                .map(Some)
                .ok_or_else(|| WireError::malformed(format!("{name} must be a 32-bit integer."))),
            Some(_) => Err(WireError::malformed(format!("{name} must be an integer."))),
        }
    };
    let string = |name: &str| -> Result<(), WireError> {
        match member(&object, name) {
            None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
            Some(_) => Err(WireError::malformed(format!("{name} must be a string."))),
        }
    };
    int("BusinessUnitId")?;
    string("IpAddress")?;
    string("Organization")?;
    Ok(CreateRequest {
        promotion_code: int("PromotionCode")?,
    })
}

/// Reads the native transfer body `{"NewSessionKey": "…"}`.
pub fn parse_native_transfer(media_type: Option<&str>, body: &[u8]) -> Result<String, WireError> {
    let text = utf8_text(body)?;
    if text.trim().is_empty() {
        return Err(WireError::malformed(
            "The request body is empty; NewSessionKey is required.",
        ));
    }
    require_json(media_type)?;
    let object = json_object(text)?;
    match member(&object, "NewSessionKey") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            Err(WireError::malformed("NewSessionKey is required."))
        }
        Some(_) => Err(WireError::malformed("NewSessionKey must be a string.")),
    }
}

fn require_json(media_type: Option<&str>) -> Result<(), WireError> {
    match media_type.and_then(BodyEncoding::of) {
        Some(BodyEncoding::Json) => Ok(()),
        _ => Err(WireError::UnsupportedMediaType(
            "The request Content-Type must be application/json or text/json.".into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Answers

/// The encoding of a wrapper answer, with the exact media type to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    Json(&'static str),
    Xml(&'static str),
}

impl AnswerFormat {
    pub const DEFAULT: AnswerFormat = AnswerFormat::Json(APPLICATION_JSON);
}

const APPLICATION_JSON: &str = "application/json; charset=utf-8";
const TEXT_JSON: &str = "text/json; charset=utf-8";
const APPLICATION_XML: &str = "application/xml; charset=utf-8";
const TEXT_XML: &str = "text/xml; charset=utf-8";

/// The `q` an `Accept` header gives `type/subtype`: that of its most specific matching range
/// (exact, then `type/*`, then `*/*`), 0 when none matches.
fn quality(accept: &str, offer: &str) -> f32 {
    let (offer_type, offer_sub) = offer.split_once('/').unwrap_or((offer, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((t, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (t, s) {
            (t, s) if t == offer_type && s == offer_sub => 3,
            (t, "*") if t == offer_type => 2,
            ("*", "*") => 1,
            _ => continue,
        };
        let mut q = 1.0f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
        }
        if best.is_none_or(|(spec, _)| specificity > spec) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// The wrapper's answer format: JSON unless `Accept` prefers XML (ties go to JSON).
pub fn negotiate(accept: Option<&str>) -> AnswerFormat {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return AnswerFormat::DEFAULT;
    };
    let q = |offer| quality(accept, offer);
    let (app_json, text_json, app_xml, text_xml) = (
        q("application/json"),
        q("text/json"),
        q("application/xml"),
        q("text/xml"),
    );
    let json = app_json.max(text_json);
    let xml = app_xml.max(text_xml);
    if xml > json {
        AnswerFormat::Xml(if text_xml > app_xml {
            TEXT_XML
        } else {
            APPLICATION_XML
        })
    } else if text_json > app_json {
        AnswerFormat::Json(TEXT_JSON)
    } else {
        AnswerFormat::DEFAULT
    }
}

/// Text content escaped as XML writers do (`& < >`).
fn xml_text(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::partial_escape(s)
}

/// `ApiSuccess<TransferSessionResult>` as JSON.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TransferSuccess<'a> {
    success: bool,
    data: TransferResult<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TransferResult<'a> {
    session_key: &'a str,
}

/// One entry of `ErrorMessages`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorMessage<'a> {
    pub code: &'a str,
    pub description: &'a str,
}

/// `ApiFailure` as JSON.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WrapperFailure<'a> {
    success: bool,
    data: Option<()>,
    error_messages: [ErrorMessage<'a>; 1],
}

/// A native API failure: `{"ErrorMessages": [...]}`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NativeFailure<'a> {
    error_messages: [ErrorMessage<'a>; 1],
}

fn json_bytes(value: &impl Serialize) -> Vec<u8> {
    // Our own answer types always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The success answer of `api/TransferSession`. The XML mirrors DataContractSerializer's
/// output in the original API's sample: no declaration, `Data` binding the entities
/// namespace to `d2p1`.
pub fn transfer_success(format: AnswerFormat, new_key: &str) -> ApiResponse {
    match format {
        AnswerFormat::Json(ct) => ApiResponse::bytes(
            200,
            ct,
            json_bytes(&TransferSuccess {
                success: true,
                data: TransferResult {
                    session_key: new_key,
                },
            }),
        ),
        AnswerFormat::Xml(ct) => ApiResponse::bytes(
            200,
            ct,
            format!(
                "<{SUCCESS_ROOT} xmlns:i=\"{XSI_NS}\" xmlns=\"{API_NS}\">\
                 <Data xmlns:d2p1=\"{ENTITIES_NS}\"><d2p1:SessionKey>{}</d2p1:SessionKey></Data>\
                 </{SUCCESS_ROOT}>",
                xml_text(new_key)
            ),
        ),
    }
}

/// A failure of `api/TransferSession` (SPEC §4.3, §12): JSON
/// `{"Success":false,"Data":null,"ErrorMessages":[{"Code","Description"}]}`, or the XML
/// `ApiFailure` with its members in DataContractSerializer's (alphabetical) order.
pub fn wrapper_failure(
    format: AnswerFormat,
    status: u16,
    code: &str,
    description: &str,
) -> ApiResponse {
    match format {
        AnswerFormat::Json(ct) => ApiResponse::bytes(
            status,
            ct,
            json_bytes(&WrapperFailure {
                success: false,
                data: None,
                error_messages: [ErrorMessage { code, description }],
            }),
        ),
        AnswerFormat::Xml(ct) => ApiResponse::bytes(
            status,
            ct,
            format!(
                "<ApiFailure xmlns:i=\"{XSI_NS}\" xmlns=\"{API_NS}\"><Data i:nil=\"true\"/>\
                 <ErrorMessages><ErrorMessage><Code>{}</Code><Description>{}</Description></ErrorMessage>\
                 </ErrorMessages><Success>false</Success></ApiFailure>",
                xml_text(code),
                xml_text(description)
            ),
        ),
    }
}

/// A failure of the native API: `{"ErrorMessages":[{"Code","Description"}]}`.
pub fn native_failure(status: u16, code: &str, description: &str) -> ApiResponse {
    ApiResponse::bytes(
        status,
        APPLICATION_JSON,
        json_bytes(&NativeFailure {
            error_messages: [ErrorMessage { code, description }],
        }),
    )
}

/// A native API success with a JSON body.
pub fn native_json(value: &impl Serialize) -> ApiResponse {
    ApiResponse::bytes(200, APPLICATION_JSON, json_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn xml_request(inner: &str) -> String {
        format!(
            "<TransferSessionRequest xmlns:i=\"{XSI_NS}\" xmlns=\"{ENTITIES_NS}\">{inner}</TransferSessionRequest>"
        )
    }

    fn xml(body: &str) -> Result<TransferRequest, WireError> {
        parse_transfer_request(Some("application/xml"), body.as_bytes())
    }

    fn malformed(r: Result<TransferRequest, WireError>) -> String {
        match r {
            Err(WireError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn ok(key: &str, reset: bool) -> Result<TransferRequest, WireError> {
        Ok(TransferRequest {
            session_key: key.into(),
            reset_session_by_login: reset,
        })
    }

    #[test]
    fn json_requests() {
        let p = |b: &str| parse_transfer_request(Some("application/json"), b.as_bytes());
        assert_eq!(
            p(r#"{"SessionKey":"a+b/=","ResetSessionByLogin":true}"#),
            ok("a+b/=", true)
        );
        assert_eq!(p(r#"{"SessionKey":"k"}"#), ok("k", false));
        assert_eq!(
            p(r#"{"sessionkey":"k","resetSessionByLogin":null}"#),
            ok("k", false)
        );
        assert_eq!(
            parse_transfer_request(
                Some("text/json"),
                "\u{feff}{\"SessionKey\":\"k\"}".as_bytes()
            ),
            ok("k", false)
        );
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"SessionKey": 5}"#,
            r#"{"SessionKey": ""}"#,
            r#"{"ResetSessionByLogin": true}"#,
            r#"{"SessionKey":"k","ResetSessionByLogin":"yes"}"#,
        ] {
            malformed(p(bad));
        }
        let deep = "[".repeat(10_000);
        malformed(p(&deep));
    }

    #[test]
    fn form_requests() {
        let p = |b: &str| {
            parse_transfer_request(Some("application/x-www-form-urlencoded"), b.as_bytes())
        };
        assert_eq!(
            p("SessionKey=a%2Bb%2F%3D&ResetSessionByLogin=True"),
            ok("a+b/=", true)
        );
        assert_eq!(
            p("ResetSessionByLogin=false&sessionKey=k&SessionKey=exact"),
            ok("exact", false)
        );
        assert_eq!(p("SessionKey=k&SessionKey=second"), ok("k", false));
        assert_eq!(
            p("SessionKey=a+b"),
            ok("a b", false),
            "+ is a space in forms"
        );
        malformed(p("ResetSessionByLogin=true"));
        malformed(p("SessionKey=k&ResetSessionByLogin=maybe"));
        malformed(p("SessionKey=%ff"));
        malformed(p(""));
    }

    #[test]
    fn unsupported_media_types() {
        for mt in [None, Some("text/plain"), Some("application/octet-stream")] {
            assert!(matches!(
                parse_transfer_request(mt, b"{\"SessionKey\":\"k\"}"),
                Err(WireError::UnsupportedMediaType(_))
            ));
        }
    }

    #[test]
    fn xml_sample_from_the_original_api() {
        let sample = format!(
            "<TransferSessionRequest xmlns:i=\"{XSI_NS}\" xmlns=\"{ENTITIES_NS}\">\n  \
             <ResetSessionByLogin>true</ResetSessionByLogin>\n  <SessionKey>sample string 1</SessionKey>\n\
             </TransferSessionRequest>"
        );
        assert_eq!(xml(&sample), ok("sample string 1", true));
        assert_eq!(
            parse_transfer_request(
                Some("text/xml"),
                format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{sample}").as_bytes()
            ),
            ok("sample string 1", true)
        );
    }

    #[test]
    fn xml_variants_that_are_fine() {
        // Prefixed names, members in either order, unknown members, entities, CDATA, comments.
        let prefixed = format!(
            "<s:TransferSessionRequest xmlns:s=\"{ENTITIES_NS}\"><s:SessionKey>k</s:SessionKey>\
             <s:ResetSessionByLogin> 1 </s:ResetSessionByLogin></s:TransferSessionRequest>"
        );
        assert_eq!(xml(&prefixed), ok("k", true));
        assert_eq!(
            xml(&xml_request("<SessionKey>a&amp;b&#x2B;<![CDATA[/=]]></SessionKey><!-- note --><Extra><X>1</X></Extra>")),
            ok("a&b+/=", false)
        );
        assert_eq!(
            xml(&xml_request(
                "<ResetSessionByLogin i:nil=\"true\"/><SessionKey>k</SessionKey>"
            )),
            ok("k", false)
        );
    }

    #[test]
    fn xml_that_is_refused() {
        let cases = [
            "<TransferSessionRequest><SessionKey>abc</Sess".to_string(),
            "<TransferSessionRequest><SessionKey>abc</SessionKey></TransferSessionRequest>"
                .to_string(), // no namespace
            format!("<TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>abc</Sess"),
            format!("<TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>abc</SessionKey>"),
            xml_request("<SessionKey>abc</ResetSessionByLogin>"),
            xml_request("<SessionKey>a&b</SessionKey>"),
            format!("<Other xmlns=\"{ENTITIES_NS}\"><SessionKey>k</SessionKey></Other>"),
            xml_request(""),
            xml_request("<SessionKey/>"),
            xml_request("<SessionKey i:nil=\"true\"/>"),
            xml_request("<SessionKey>a</SessionKey><SessionKey>b</SessionKey>"),
            xml_request("<SessionKey><b>k</b></SessionKey>"),
            xml_request("<SessionKey>k</SessionKey><ResetSessionByLogin>yes</ResetSessionByLogin>"),
            xml_request("stray text<SessionKey>k</SessionKey>"),
            xml_request("<SessionKey>&custom;</SessionKey>"),
            xml_request("<x:SessionKey>k</x:SessionKey>"),
            format!("{}<again/>", xml_request("<SessionKey>k</SessionKey>")),
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-16\"?>{}",
                xml_request("<SessionKey>k</SessionKey>")
            ),
            String::new(),
            "not xml at all".to_string(),
        ];
        for c in cases {
            malformed(xml(&c));
        }
    }

    #[test]
    fn xml_dtds_and_entity_tricks_are_refused() {
        let billion_laughs = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>{}",
            xml_request("<SessionKey>&lol2;</SessionKey>")
        );
        let external = format!(
            "<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
            xml_request("<SessionKey>&xxe;</SessionKey>")
        );
        let plain_doctype = format!(
            "<!DOCTYPE TransferSessionRequest>{}",
            xml_request("<SessionKey>k</SessionKey>")
        );
        for doc in [billion_laughs, external, plain_doctype] {
            assert!(malformed(xml(&doc)).contains("DOCTYPE"), "{doc}");
        }
    }

    #[test]
    fn xml_bounds() {
        let deep = xml_request(&format!(
            "{}{}",
            "<a>".repeat(MAX_XML_DEPTH),
            "</a>".repeat(MAX_XML_DEPTH)
        ));
        assert!(malformed(xml(&deep)).contains("deeper"));
        let many = xml_request(&format!(
            "<SessionKey>k</SessionKey>{}",
            "<a/>".repeat(MAX_XML_ELEMENTS)
        ));
        assert!(malformed(xml(&many)).contains("elements"));
        let big = xml_request(&format!(
            "<SessionKey>k</SessionKey><!--{}-->",
            "x".repeat(MAX_XML_BYTES)
        ));
        assert!(malformed(xml(&big)).contains("larger"));
        let long = xml_request(&format!(
            "<SessionKey>{}</SessionKey>",
            "k".repeat(MAX_VALUE_CHARS + 1)
        ));
        assert!(malformed(xml(&long)).contains("too long"));
    }

    #[test]
    fn create_requests() {
        let p = |b: &str| parse_create_request(Some("application/json"), b.as_bytes());
        assert_eq!(p(""), Ok(CreateRequest::default()));
        assert_eq!(
            parse_create_request(None, b""),
            Ok(CreateRequest::default())
        );
        assert_eq!(p("null"), Ok(CreateRequest::default()));
        assert_eq!(p("{}"), Ok(CreateRequest::default()));
        assert_eq!(
            p(
                r#"{"BusinessUnitId":1,"IpAddress":"203.0.113.9","Organization":"IMPRESARIO","PromotionCode":77}"#
            ),
            Ok(CreateRequest {
                promotion_code: Some(77)
            })
        );
        for bad in [
            r#"{"PromotionCode":"77"}"#,
            r#"{"PromotionCode":1.5}"#,
            r#"{"PromotionCode":99999999999}"#,
            r#"{"IpAddress":1}"#,
            "[1]",
            "{",
        ] {
            assert!(matches!(p(bad), Err(WireError::Malformed(_))), "{bad}");
        }
        assert!(matches!(
            parse_create_request(Some("text/plain"), b"{}"),
            Err(WireError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn native_transfer_requests() {
        let p = |b: &str| parse_native_transfer(Some("application/json"), b.as_bytes());
        assert_eq!(p(r#"{"NewSessionKey":"a+b"}"#), Ok("a+b".to_string()));
        for bad in [
            "",
            "{}",
            r#"{"NewSessionKey":""}"#,
            r#"{"NewSessionKey":1}"#,
            "nope",
        ] {
            assert!(matches!(p(bad), Err(WireError::Malformed(_))), "{bad}");
        }
        assert!(matches!(
            parse_native_transfer(None, b"{\"NewSessionKey\":\"k\"}"),
            Err(WireError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn negotiation() {
        use AnswerFormat::*;
        let n = |a: &str| negotiate(Some(a));
        assert_eq!(negotiate(None), Json(APPLICATION_JSON));
        assert_eq!(n(""), Json(APPLICATION_JSON));
        assert_eq!(n("*/*"), Json(APPLICATION_JSON));
        assert_eq!(n("text/html"), Json(APPLICATION_JSON));
        assert_eq!(n("application/xml"), Xml(APPLICATION_XML));
        assert_eq!(n("Text/XML"), Xml(TEXT_XML));
        assert_eq!(n("text/json"), Json(TEXT_JSON));
        assert_eq!(
            n("application/json, application/xml"),
            Json(APPLICATION_JSON)
        );
        assert_eq!(
            n("application/json;q=0.5, application/xml"),
            Xml(APPLICATION_XML)
        );
        assert_eq!(n("application/xml;q=0.9, */*;q=0.1"), Xml(APPLICATION_XML));
        assert_eq!(n("application/*, text/xml"), Json(APPLICATION_JSON));
        assert_eq!(n("application/xml;q=0, */*"), Json(APPLICATION_JSON));
        assert_eq!(n("application/xml;q=bogus"), Json(APPLICATION_JSON));
    }

    #[test]
    fn xml_answers_are_exact() {
        let key = "7BR3ADSqz5RtMTAn0WWi+pID56HCJ8vNMIOKS7sHoqERGs4kkKrHlGK7wtrUEcVjTln8539xoMjE8cXGvfwLpEfFnPa3uHzKLG+ougjOvlU=";
        let ok = transfer_success(AnswerFormat::Xml(APPLICATION_XML), key);
        assert_eq!(ok.status, 200);
        assert_eq!(
            std::str::from_utf8(&ok.body).unwrap(),
            format!(
                "<ApiSuccessOfTransferSessionResult5WS87vwN xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" \
                 xmlns=\"http://schemas.datacontract.org/2004/07/SFMOMA.Data.Api\">\
                 <Data xmlns:d2p1=\"http://schemas.datacontract.org/2004/07/SFMOMA.Data.Entities.Session\">\
                 <d2p1:SessionKey>{key}</d2p1:SessionKey></Data></ApiSuccessOfTransferSessionResult5WS87vwN>"
            )
        );
        let failure = wrapper_failure(
            AnswerFormat::Xml(TEXT_XML),
            404,
            "SessionNotFound",
            "a < b & c",
        );
        assert_eq!(failure.status, 404);
        assert_eq!(
            std::str::from_utf8(&failure.body).unwrap(),
            "<ApiFailure xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xmlns=\"http://schemas.datacontract.org/2004/07/SFMOMA.Data.Api\"><Data i:nil=\"true\"/>\
             <ErrorMessages><ErrorMessage><Code>SessionNotFound</Code><Description>a &lt; b &amp; c</Description>\
             </ErrorMessage></ErrorMessages><Success>false</Success></ApiFailure>"
        );
    }

    #[test]
    fn json_answers_are_exact() {
        let ok = transfer_success(AnswerFormat::DEFAULT, "k+/=");
        assert_eq!(
            &ok.body[..],
            br#"{"Success":true,"Data":{"SessionKey":"k+/="}}"#
        );
        let f = wrapper_failure(AnswerFormat::DEFAULT, 400, "InvalidRequest", "bad \"x\"");
        assert_eq!(
            &f.body[..],
            br#"{"Success":false,"Data":null,"ErrorMessages":[{"Code":"InvalidRequest","Description":"bad \"x\""}]}"#
        );
        let n = native_failure(404, "SessionNotFound", "gone");
        assert_eq!(
            &n.body[..],
            br#"{"ErrorMessages":[{"Code":"SessionNotFound","Description":"gone"}]}"#
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), mt in 0usize..5) {
            let media = ["application/json", "text/xml", "application/x-www-form-urlencoded", "text/plain", "application/xml"][mt];
            let _ = parse_transfer_request(Some(media), &body);
            let _ = parse_create_request(Some(media), &body);
            let _ = parse_native_transfer(Some(media), &body);
        }

        #[test]
        fn xml_parser_never_panics_on_xmlish_text(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("<TransferSessionRequest xmlns=\"http://schemas.datacontract.org/2004/07/SFMOMA.Data.Entities.Session\">".to_string()),
                    Just("</TransferSessionRequest>".to_string()),
                    Just("<SessionKey>".to_string()),
                    Just("</SessionKey>".to_string()),
                    Just("<ResetSessionByLogin>".to_string()),
                    Just("</ResetSessionByLogin>".to_string()),
                    Just("<!DOCTYPE x>".to_string()),
                    Just("<![CDATA[".to_string()),
                    Just("]]>".to_string()),
                    Just("&amp;".to_string()),
                    Just("&#x0;".to_string()),
                    Just("&#99999999;".to_string()),
                    Just("<?xml version=\"1.0\"?>".to_string()),
                    Just("<a:b xmlns:a=\"u\">".to_string()),
                    Just("<x i:nil=\"true\"/>".to_string()),
                    "\\PC{0,8}",
                ],
                0..24,
            )
        ) {
            let doc = parts.concat();
            let _ = parse_transfer_request(Some("application/xml"), doc.as_bytes());
        }

        #[test]
        fn form_round_trip(key in "[A-Za-z0-9+/=]{1,108}") {
            let encoded: String = percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
            let r = parse_transfer_request(Some("application/x-www-form-urlencoded"), format!("SessionKey={encoded}").as_bytes());
            prop_assert_eq!(r, Ok(TransferRequest { session_key: key, reset_session_by_login: false }));
        }
    }
}
