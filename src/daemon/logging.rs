//! Logging with env_logger (`RUST_LOG`): one line per event, `event=… key=value` fields.
//! `TOKEND_LOG_FORMAT=json` writes one JSON object per line instead, with the message's
//! `key=value` fields lifted into the object, for log shippers.

use std::io::Write;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Splits `event=x site=a message="two words"` into fields; other words are left alone.
pub fn fields(message: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let mut rest = message.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = &rest[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) {
            // Not a key=value pair: skip a word.
            rest = rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim_start();
            continue;
        }
        let after = &rest[eq + 1..];
        let (value, remainder) = if let Some((json, end)) = json_value(after) {
            (json, &after[end..])
        } else if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (Value::String(quoted[..end].to_string()), &quoted[end + 1..]),
                None => (Value::String(quoted.to_string()), ""),
            }
        } else {
            let (word, rest) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            (bare_value(word), rest)
        };
        out.insert(key.to_string(), value);
        rest = remainder.trim_start();
    }
    out
}

/// A JSON object or array at the start of `text` (a portal answer's shape), with its end.
fn json_value(text: &str) -> Option<(Value, usize)> {
    if !text.starts_with(['{', '[']) {
        return None;
    }
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

/// An unquoted value: a JSON number when it is one (`attempts=1`, `duration=0.25`), else text.
fn bare_value(word: &str) -> Value {
    let numeric = word
        .trim_start_matches('-')
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        && word.chars().any(|c| c.is_ascii_digit());
    if numeric {
        if let Ok(n) = word.parse::<i64>() {
            return Value::from(n);
        }
        if let Some(n) = word
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(word.to_string())
}

/// The log formats of `TOKEND_LOG_FORMAT`.
const FORMATS: [&str; 2] = ["text", "json"];

/// Starts the logger; the daemon logs at info, other commands only warnings (`RUST_LOG` wins).
/// An unknown `TOKEND_LOG_FORMAT` is a configuration error, not a silent fallback.
pub fn init(daemon: bool) -> Result<()> {
    let format = std::env::var("TOKEND_LOG_FORMAT").unwrap_or_default();
    if !(format.is_empty() || FORMATS.contains(&format.as_str())) {
        return Err(Error::config(
            "TOKEND_LOG_FORMAT",
            format!("`{format}` is not a log format: use text or json"),
        ));
    }
    let default = if daemon { "info" } else { "warn" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if format == "json" {
        builder.format(|buf, record| {
            let message = record.args().to_string();
            let mut object = fields(&message);
            object.insert(
                "ts".into(),
                Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            );
            object.insert("level".into(), Value::String(record.level().to_string()));
            object.insert("target".into(), Value::String(record.target().to_string()));
            object.insert("message".into(), Value::String(message));
            writeln!(buf, "{}", Value::Object(object))
        });
    } else {
        builder.format_timestamp_millis();
    }
    let _ = builder.try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_lifted() {
        let f = fields(
            r#"ALERT firing type=low_success_rate severity=high message="two words" value=0.00"#,
        );
        assert_eq!(f["type"], "low_success_rate");
        assert_eq!(f["message"], "two words");
        assert_eq!(f["value"], 0.0);
        assert!(fields("plain words only").is_empty());
        let f = fields(r#"event=x attempts=1 duration=-0.25 id="42" fp=ab12 ip=1.2.3.4"#);
        assert_eq!(f["attempts"], serde_json::json!(1));
        assert_eq!(f["duration"], serde_json::json!(-0.25));
        assert_eq!(f["id"], "42");
        assert_eq!(f["fp"], "ab12");
        assert_eq!(f["ip"], "1.2.3.4");
        let f = fields(r#"event=court_step answer={"code":200,"message":"two words"} bytes=9"#);
        assert_eq!(f["answer"]["message"], "two words");
        assert_eq!(f["bytes"], 9);
    }
}
