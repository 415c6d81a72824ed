//! The Tessitura wire codec (SPEC §4.3): request bodies in JSON, XML and form encoding in,
//! answers in JSON or DataContractSerializer-style XML out, `Accept` negotiation, and the API's
//! routes (which path is which endpoint, keys sent unencoded). No service, no pingora: only
//! bytes <-> typed values here; what the values mean is `mod.rs`'s job.
//!
//! The XML reader is deliberately small and suspicious: no DOCTYPE (so no DTD, no entity
//! definitions, no external entities), only the five predefined entities and character
//! references, and bounds on size, depth and element count.

use crate::api::ApiResponse;
use crate::session::id::is_valid_client_id;
use http::header::{HeaderValue, ALLOW};
use percent_encoding::percent_decode_str;
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
    let mut request = TransferXml::default();
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(xml_error)?;
        if let ResolveResult::Unknown(prefix) = ns {
            return Err(WireError::malformed(format!(
                "The XML uses the undeclared namespace prefix {:?}.",
                String::from_utf8_lossy(&prefix)
            )));
        }
        let in_entities_ns =
            matches!(ns, ResolveResult::Bound(n) if n.as_ref() == ENTITIES_NS.as_bytes());
        match event {
            Event::DocType(_) => {
                return Err(WireError::malformed(
                    "DOCTYPE declarations are not allowed in the request body.",
                ));
            }
            Event::Decl(decl) => check_encoding(&decl)?,
            Event::Start(ref start) => request.start(&reader, start, in_entities_ns)?,
            Event::Empty(ref start) => {
                request.start(&reader, start, in_entities_ns)?;
                request.end()?;
            }
            Event::End(_) => request.end()?,
            Event::Text(t) => request.text(&t.decode().map_err(xml_error)?)?,
            Event::CData(t) => {
                let t = t.decode().map_err(xml_error)?;
                request.require_root()?;
                request.text(&t)?;
            }
            Event::GeneralRef(r) => {
                let c = entity(&r)?;
                request.require_root()?;
                request.text(c.encode_utf8(&mut [0; 4]))?;
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    request.finish()
}

/// Refuses an XML declaration naming an encoding other than UTF-8.
fn check_encoding(decl: &quick_xml::events::BytesDecl<'_>) -> Result<(), WireError> {
    if let Some(enc) = decl.encoding() {
        let enc = enc.map_err(xml_error)?;
        if !enc.eq_ignore_ascii_case(b"utf-8") {
            return Err(WireError::malformed("The XML must be encoded in UTF-8."));
        }
    }
    Ok(())
}

/// The character an entity or character reference stands for: only the five predefined
/// entities exist (there is no DTD to define others).
fn entity(r: &quick_xml::events::BytesRef<'_>) -> Result<char, WireError> {
    let resolved = if r.is_char_ref() {
        r.resolve_char_ref().map_err(xml_error)?
    } else {
        match &**r {
            b"lt" => Some('<'),
            b"gt" => Some('>'),
            b"amp" => Some('&'),
            b"apos" => Some('\''),
            b"quot" => Some('"'),
            _ => None,
        }
    };
    resolved.ok_or_else(|| {
        WireError::malformed(format!(
            "The XML refers to the undefined entity &{};.",
            String::from_utf8_lossy(r)
        ))
    })
}

/// The state of reading a `TransferSessionRequest`: `transfer_from_xml` feeds it the
/// document's start and end tags and its text, in order.
#[derive(Default)]
struct TransferXml {
    depth: usize,
    elements: usize,
    root_seen: bool,
    root_closed: bool,
    /// The member being read (depth 2), and its text so far.
    current: Option<XmlField>,
    value: String,
    /// `Some(None)`: present but nil.
    session_key: Option<Option<String>>,
    reset: Option<bool>,
}

impl TransferXml {
    /// An element opens (`<x>`, or the first half of `<x/>`).
    fn start(
        &mut self,
        reader: &NsReader<&[u8]>,
        start: &BytesStart<'_>,
        in_entities_ns: bool,
    ) -> Result<(), WireError> {
        if self.root_closed {
            return Err(WireError::malformed(
                "The XML has more than one root element.",
            ));
        }
        self.elements += 1;
        self.depth += 1;
        if self.elements > MAX_XML_ELEMENTS {
            return Err(WireError::malformed(format!(
                "The XML has more than {MAX_XML_ELEMENTS} elements."
            )));
        }
        if self.depth > MAX_XML_DEPTH {
            return Err(WireError::malformed(format!(
                "The XML is nested deeper than {MAX_XML_DEPTH} levels."
            )));
        }
        let local = start.local_name();
        match self.depth {
            1 => {
                if !in_entities_ns || local.as_ref() != b"TransferSessionRequest" {
                    return Err(WireError::malformed(format!(
                        "The XML root element must be TransferSessionRequest in namespace {ENTITIES_NS}."
                    )));
                }
                self.root_seen = true;
            }
            2 if in_entities_ns => {
                let field = match local.as_ref() {
                    b"SessionKey" => XmlField::SessionKey,
                    b"ResetSessionByLogin" => XmlField::ResetSessionByLogin,
                    _ => return Ok(()),
                };
                self.member(field, is_nil(reader, start)?)?;
            }
            3.. if self.current.is_some() => {
                let name = self.current.map_or("", XmlField::name);
                return Err(WireError::malformed(format!(
                    "{name} must hold text, not elements."
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// A known member opens: it is read unless nil (an absent member, marked seen).
    fn member(&mut self, field: XmlField, nil: bool) -> Result<(), WireError> {
        let seen = match field {
            XmlField::SessionKey => self.session_key.is_some(),
            XmlField::ResetSessionByLogin => self.reset.is_some(),
        };
        if seen {
            return Err(WireError::malformed(format!(
                "{} appears more than once.",
                field.name()
            )));
        }
        if nil {
            match field {
                XmlField::SessionKey => self.session_key = Some(None),
                XmlField::ResetSessionByLogin => self.reset = Some(false),
            }
            self.current = None;
        } else {
            self.current = Some(field);
            self.value.clear();
        }
        Ok(())
    }

    /// An element closes (`</x>`, or the second half of `<x/>`).
    fn end(&mut self) -> Result<(), WireError> {
        if self.depth == 2 {
            if let Some(field) = self.current.take() {
                self.store(field)?;
            }
        }
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            self.root_closed = true;
        }
        Ok(())
    }

    /// Character data outside the root element, other than whitespace text, is refused.
    fn require_root(&self) -> Result<(), WireError> {
        if self.depth == 0 {
            return Err(WireError::malformed(
                "The XML has character data outside its root element.",
            ));
        }
        Ok(())
    }

    /// Adds character data to the member being read; elsewhere only whitespace is allowed,
    /// except inside unknown members, whose content is skipped.
    fn text(&mut self, text: &str) -> Result<(), WireError> {
        if self.current.is_some() && self.depth == 2 {
            if self.value.len() + text.len() > MAX_VALUE_CHARS {
                return Err(WireError::malformed("A value in the XML is too long."));
            }
            self.value.push_str(text);
            Ok(())
        } else if self.depth <= 1 && !text.trim().is_empty() {
            Err(WireError::malformed(
                "The XML has character data outside the request's members.",
            ))
        } else {
            Ok(())
        }
    }

    fn store(&mut self, field: XmlField) -> Result<(), WireError> {
        let text = self.value.trim();
        match field {
            XmlField::SessionKey => self.session_key = Some(Some(text.to_string())),
            // xs:boolean: true, false, 1, 0 (surrounding whitespace allowed).
            XmlField::ResetSessionByLogin => {
                self.reset = Some(match text {
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

    /// The request, once the document has ended.
    fn finish(self) -> Result<TransferRequest, WireError> {
        if !self.root_seen || self.depth != 0 {
            return Err(WireError::malformed("The XML document is incomplete."));
        }
        Ok(TransferRequest {
            session_key: required_key(self.session_key.flatten())?,
            reset_session_by_login: self.reset.unwrap_or(false),
        })
    }
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

// ------------------------------------------------------------------------------------------
// Paths and answers of the API

/// `ErrorMessages[].Code` values.
pub(super) mod code {
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    pub const INVALID_SESSION_KEY: &str = "InvalidSessionKey";
    pub const SESSION_NOT_FOUND: &str = "SessionNotFound";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UnsupportedMediaType";
    pub const REQUEST_TOO_LARGE: &str = "RequestTooLarge";
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
}

pub(super) const UNKNOWN_SESSION: &str = "The session key is unknown or has expired.";
pub(super) const UNKNOWN_TARGET: &str = "The NewSessionKey is unknown or has expired.";
const STORE_DOWN: &str = "The session store is unavailable; try again shortly.";

/// A segment of `/Web/Session/...` that names a native endpoint rather than a session key;
/// requests there are the app's.
const NOT_KEYS: [&str; 1] = ["BusinessFacing"];

/// One of this API's own endpoints; keys still percent-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint<'p> {
    TransferSession,
    CreateSession,
    Session(&'p str),
    NativeTransfer(&'p str),
}

pub(super) fn route(path: &str) -> Option<Endpoint<'_>> {
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let is = |seg: &str, name: &str| seg.eq_ignore_ascii_case(name);
    let mut segs = path.split('/');
    let parts: [Option<&str>; 5] = std::array::from_fn(|_| segs.next());
    match parts {
        [Some(a), Some(t), None, ..] if is(a, "api") && is(t, "TransferSession") => {
            Some(Endpoint::TransferSession)
        }
        [Some(w), Some(s), rest @ ..] if is(w, "Web") && is(s, "Session") => match rest {
            [None, ..] => Some(Endpoint::CreateSession),
            [Some(key), rest @ ..] if !key.is_empty() && !NOT_KEYS.iter().any(|n| is(key, n)) => {
                match rest {
                    [None, ..] => Some(Endpoint::Session(key)),
                    [Some(t), None] if is(t, "Transfer") => Some(Endpoint::NativeTransfer(key)),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// The rest of a `/Web/Session/{rest}` path whose key may have been sent unencoded: more than
/// one segment, and no endpoint `route` knows (still percent-encoded, trailing slash removed).
pub(super) fn unencoded_rest(path: &str) -> Option<&str> {
    if route(path).is_some() {
        return None;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let (web, rest) = trimmed.strip_prefix('/')?.split_once('/')?;
    let (session, rest) = rest.split_once('/')?;
    // A key may itself start with `/` (1 in 64 do), which makes `//` in the path.
    (web.eq_ignore_ascii_case("Web")
        && session.eq_ignore_ascii_case("Session")
        && rest.contains('/'))
    .then_some(rest)
}

/// Whether a path's text is a key of the shape `POST Web/Session` generates (80 random bytes
/// in standard base64, SPEC §3).
pub(super) fn has_key_shape(encoded: &str) -> bool {
    use base64::Engine;
    path_key(encoded).is_ok_and(|k| {
        k.len() == 108
            && base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|raw| raw.len() == 80)
    })
}

/// `rest` without a trailing `/Transfer` (any case), if it has one.
pub(super) fn without_transfer(rest: &str) -> Option<&str> {
    let cut = rest.len().checked_sub("/Transfer".len())?;
    let (head, tail) = (rest.get(..cut)?, rest.get(cut..)?);
    (tail.eq_ignore_ascii_case("/Transfer") && !head.is_empty()).then_some(head)
}

/// The native `Session` model, as far as the sidecar knows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SessionView<'a> {
    pub(super) session_key: &'a str,
    pub(super) is_logged_in: bool,
    pub(super) mode_of_sale_id: i64,
    pub(super) original_mode_of_sale_id: i64,
    pub(super) source_id: i64,
    pub(super) login_info: LoginInfo<'a>,
}

/// `LoginInfo`; the values the sidecar does not track are null (or 0 failed attempts).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct LoginInfo<'a> {
    pub(super) constituent_id: Option<&'a str>,
    pub(super) original_constituent_id: Option<&'a str>,
    pub(super) user_id: Option<&'a str>,
    pub(super) status: Option<&'a str>,
    pub(super) failed_attempts: u32,
    pub(super) locked_date: Option<&'a str>,
    pub(super) electronic_address: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SessionKeyAnswer<'a> {
    pub(super) session_key: &'a str,
}

/// Which answer shape a failure takes: the wrapper's envelope or the native list.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    Wrapper(AnswerFormat),
    Native,
}

impl Shape {
    pub(super) fn failure(self, status: u16, code: &str, description: &str) -> ApiResponse {
        match self {
            Shape::Wrapper(format) => wrapper_failure(format, status, code, description),
            Shape::Native => native_failure(status, code, description),
        }
    }

    pub(super) fn wire_error(self, e: WireError) -> ApiResponse {
        match e {
            WireError::Malformed(m) => self.failure(400, code::INVALID_REQUEST, &m),
            WireError::UnsupportedMediaType(m) => {
                self.failure(415, code::UNSUPPORTED_MEDIA_TYPE, &m)
            }
        }
    }

    pub(super) fn method_not_allowed(self, allowed: &'static str) -> ApiResponse {
        self.failure(
            405,
            code::METHOD_NOT_ALLOWED,
            &format!("This endpoint accepts only {allowed}."),
        )
        .with_header(ALLOW, HeaderValue::from_static(allowed))
    }

    pub(super) fn unavailable(self) -> ApiResponse {
        self.failure(503, code::SERVICE_UNAVAILABLE, STORE_DOWN)
    }

    pub(super) fn not_found(self, description: &str) -> ApiResponse {
        self.failure(404, code::SESSION_NOT_FOUND, description)
    }
}

/// A session key from a path segment: percent-decoded (`+` stays `+`), and of a shape a
/// session key can have, else 400.
pub(super) fn path_key(encoded: &str) -> Result<String, ApiResponse> {
    percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
        .filter(|k| is_valid_client_id(k))
        .ok_or_else(|| {
            native_failure(
                400,
                code::INVALID_SESSION_KEY,
                "The session key in the path is malformed.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::id::new_tessitura_key;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        use Endpoint::*;
        assert_eq!(route("/api/TransferSession"), Some(TransferSession));
        assert_eq!(route("/API/transfersession/"), Some(TransferSession));
        assert_eq!(route("/Web/Session"), Some(CreateSession));
        assert_eq!(route("/web/session/"), Some(CreateSession));
        assert_eq!(route("/Web/Session/a%2Bb%3D"), Some(Session("a%2Bb%3D")));
        assert_eq!(route("/Web/Session/k/"), Some(Session("k")));
        assert_eq!(route("/Web/Session/k/Transfer"), Some(NativeTransfer("k")));
        assert_eq!(route("/Web/Session/k/transfer/"), Some(NativeTransfer("k")));
        for forwarded in [
            "",
            "/",
            "/api",
            "/api/TransferSession/x",
            "/api/Login",
            "/Web",
            "/Web/Session//Transfer",
            "/Web/Session/k/Expiration",
            "/Web/Session/k/Login",
            "/Web/Session/k/Transfer/x",
            "/Web/Session/BusinessFacing",
            "/Web/Session/k/Login/SendCredentials",
            "/Web/Sessions/k",
            "/Web/Cart/k",
        ] {
            assert_eq!(route(forwarded), None, "{forwarded}");
        }
    }

    #[test]
    fn unencoded_paths() {
        assert_eq!(unencoded_rest("/Web/Session/ab/cd="), Some("ab/cd="));
        assert_eq!(unencoded_rest("/web/session/ab/cd=/"), Some("ab/cd="));
        assert_eq!(unencoded_rest("/Web/Session//ab/cd="), Some("/ab/cd="));
        assert_eq!(unencoded_rest("/Web/Session//x"), Some("/x"));
        assert_eq!(
            unencoded_rest("/Web/Session/a/b/Transfer"),
            Some("a/b/Transfer")
        );
        assert_eq!(
            unencoded_rest("/Web/Session/k/Expiration"),
            Some("k/Expiration")
        );
        for not in [
            "/Web/Session",
            "/Web/Session/k",
            "/Web/Session/k/Transfer",
            "/Web/Cart/a/b",
            "/api/TransferSession",
            "/Web",
            "",
        ] {
            assert_eq!(unencoded_rest(not), None, "{not}");
        }
        assert_eq!(without_transfer("a/b/Transfer"), Some("a/b"));
        assert_eq!(without_transfer("a/b/transfer"), Some("a/b"));
        assert_eq!(without_transfer("/Transfer"), None);
        assert_eq!(without_transfer("a/b"), None);
        assert_eq!(without_transfer("é/Transfer"), Some("é"));
        assert_eq!(without_transfer("x"), None);
        let key = new_tessitura_key();
        assert!(has_key_shape(&key));
        assert!(has_key_shape(&key.replace('/', "%2F")));
        assert!(!has_key_shape(&key[1..]));
        assert!(!has_key_shape(&format!("{}/Expiration", &key[..97])));
        assert!(!has_key_shape("k/Expiration"));
    }

    #[test]
    fn path_keys() {
        assert_eq!(path_key("a%2Bb%2F%3D").ok().as_deref(), Some("a+b/="));
        assert_eq!(
            path_key("a+b").ok().as_deref(),
            Some("a+b"),
            "+ in a path is a plus"
        );
        for bad in ["%ff", "a%20b", "a%0D%0Ab", "%"] {
            let r = path_key(bad).expect_err(bad);
            assert_eq!(r.status, 400, "{bad}");
        }
    }

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
