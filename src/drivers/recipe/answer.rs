//! What a step reads from an answer: the tests of `[steps.answer]` ([`matches()`]), the values
//! of `[steps.extract]` ([`extracted`]), a captcha image ([`image_of`]); and the JSON body
//! templates and hosts of requests.

use serde_json::Value;

use super::expr::{self, Vars};
use super::format::{self, Matcher, Step};

/// A step's answer.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) cookies: Vec<(String, String)>,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Vec<u8>,
    pub(super) json: Option<Value>,
}

/// Whether every key of `m` holds for `answer`.
pub(super) fn matches(step: &Step, key: &str, m: &Matcher, answer: &Answer) -> bool {
    if m.status.is_some_and(|s| s != answer.status) {
        return false;
    }
    let value = match &m.json {
        Some(pointer) => match answer.json.as_ref().and_then(|j| j.pointer(pointer)) {
            Some(Value::Null) | None => return false,
            Some(v) => Some(v),
        },
        None => None,
    };
    if let (Some(want), Some(got)) = (&m.equals, value) {
        let want = serde_json::to_value(want).unwrap_or(Value::Null);
        if !same(&want, got) {
            return false;
        }
    }
    if let Some(regex) = step.answer_regexes.get(key) {
        let text = match value {
            Some(v) => value_text(v),
            None => String::from_utf8_lossy(&answer.body).into_owned(),
        };
        return regex.is_match(&text);
    }
    true
}

/// `equals` compares numbers as numbers, and a number to a numeric string.
pub(super) fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            b.trim().parse::<f64>().ok() == a.as_f64()
        }
        _ => want == got,
    }
}

pub(super) fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A variable's value from the answer; `Ok(None)`: optional and absent.
pub(super) fn extracted(
    step: &Step,
    name: &str,
    extract: &format::Extract,
    answer: &Answer,
) -> std::result::Result<Option<String>, String> {
    let found: std::result::Result<String, String> = if let Some(pointer) = &extract.json {
        match answer.json.as_ref() {
            None => Err("the answer is not JSON".into()),
            Some(json) => match json.pointer(pointer) {
                Some(Value::Null) | None => Err(format!(
                    "no `{pointer}` in the answer (the JSON has no `{}`)",
                    dotted(pointer)
                )),
                Some(v) => Ok(value_text(v)),
            },
        }
    } else if let Some(regex) = step.answer_regexes.get(&format!("extract.{name}")) {
        let body = String::from_utf8_lossy(&answer.body);
        let group = extract
            .group
            .unwrap_or(usize::from(regex.captures_len() > 1));
        regex
            .captures(&body)
            .and_then(|c| c.get(group))
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| "the regex does not match the answer".into())
    } else if let Some(cookie) = &extract.cookie {
        answer
            .cookies
            .iter()
            .find(|(n, _)| n == cookie)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("the answer sets no cookie `{cookie}`"))
    } else if let Some(header) = &extract.header {
        answer
            .headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("the answer has no header `{header}`"))
    } else {
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    };
    match found {
        Ok(value) => Ok(Some(value)),
        Err(_) if extract.optional => Ok(None),
        Err(why) => Err(why),
    }
}

/// Why a step's captcha image could not be had.
pub(super) enum ImageFault {
    /// The answer has no image where the recipe says: the recipe does not fit the portal.
    Missing(String),
    /// The image is there but cannot be read: a captcha error, tried again with a fresh one.
    Unreadable(String),
}

/// A JSON pointer as a Python developer reads it: `/data/token` is `data.token`.
fn dotted(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The captcha image: the raw body, or base64 (maybe a data URL) at a JSON pointer.
pub(super) fn image_of(image: &str, answer: &Answer) -> std::result::Result<Vec<u8>, ImageFault> {
    use base64::Engine;
    let bytes = if image == "body" {
        answer.body.clone()
    } else {
        let text = answer
            .json
            .as_ref()
            .and_then(|j| j.pointer(image))
            .and_then(Value::as_str)
            .ok_or_else(|| ImageFault::Missing(format!("no `{image}` text in the answer")))?;
        let encoded = match text.split_once("base64,") {
            Some((head, rest)) if head.starts_with("data:") => rest,
            _ => text,
        };
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| ImageFault::Unreadable(format!("`{image}` is not base64: {e}")))?
    };
    if bytes.is_empty() {
        return Err(ImageFault::Unreadable("the image is empty".into()));
    }
    Ok(bytes)
}

/// A JSON body template with every string rendered.
pub(super) fn render_json(value: &Value, vars: &Vars) -> std::result::Result<Value, String> {
    Ok(match value {
        Value::String(text) => Value::String(expr::Template::parse(text)?.render(vars)?.value),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(v, vars))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, vars)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `host[:port]` of a URL, lowercase.
pub(super) fn host_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_ascii_lowercase();
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

pub(super) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
