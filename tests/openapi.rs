//! The OpenAPI document is good enough to generate a client from: every operation has an
//! operationId of its own, and every JSON success answer has its real shape (not `object`).

mod common;

use std::collections::HashSet;

use common::{write_config, Daemon};
use serde_json::Value;

/// Follows a `$ref` into `components.schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// A schema that says more than "some object".
fn has_shape(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    schema["properties"].is_object()
        || schema["items"].is_object()
        || schema["enum"].is_array()
        || schema["oneOf"].is_array()
        || schema["allOf"].is_array()
}

#[actix_rt::test]
async fn operation_ids_are_unique_and_success_answers_have_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start(dir.path(), &config);
    let doc: Value = reqwest::get(daemon.url("/api/v1/automation/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = HashSet::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                ids.insert(id.to_string()),
                "operationId `{id}` is used twice"
            );
            let Some(schema) =
                operation["responses"]["200"]["content"]["application/json"].get("schema")
            else {
                continue;
            };
            if path.ends_with("openapi.json") {
                continue; // the document itself
            }
            let envelope = resolve(&doc, schema);
            let body = if envelope["properties"]["data"].is_null() {
                schema
            } else {
                &envelope["properties"]["data"]
            };
            assert!(
                has_shape(&doc, body),
                "{method} {path}: the success answer has no schema: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} JSON success answers checked");
    let token = resolve(
        &doc,
        &resolve(
            &doc,
            &doc["paths"]["/api/v1/automation/tokens/acquire"]["post"]["responses"]["200"]
                ["content"]["application/json"]["schema"],
        )["properties"]["data"],
    );
    for field in [
        "token",
        "account",
        "credential_id",
        "expires_at",
        "source",
        "authorization",
        "headers",
    ] {
        assert!(
            token["properties"][field].is_object(),
            "acquire answer lacks {field}: {token}"
        );
    }
}
