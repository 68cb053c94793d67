//! Logging with env_logger (`RUST_LOG`): one line per event, `event=… key=value` fields.
//! `TOKEND_LOG_FORMAT=json` writes one JSON object per line instead, with the message's
//! `key=value` fields lifted into the object, for log shippers.

use std::io::Write;

use serde_json::{Map, Value};

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
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.insert(key.to_string(), Value::String(value.to_string()));
        rest = remainder.trim_start();
    }
    out
}

/// Starts the logger; the daemon logs at info, other commands only warnings (`RUST_LOG` wins).
pub fn init(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if std::env::var("TOKEND_LOG_FORMAT").as_deref() == Ok("json") {
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
        assert_eq!(f["value"], "0.00");
        assert!(fields("plain words only").is_empty());
    }
}
