//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from the route table
//! below; a test calls every route of the table on the real router and fails when one falls
//! through to "no such route", so the table and the router cannot drift apart unnoticed.
//!
//! Owns: the document's text. Must not touch the handlers' behaviour; it describes them.

use axum::Json;
use serde_json::{json, Map, Value};

/// (method, path, roles, summary, query parameters)
pub const ROUTES: &[(&str, &str, &str, &str, &[&str])] = &[
    ("get", "/healthz", "", "Broker and database state", &[]),
    ("get", "/metrics", "", "Prometheus metrics", &[]),
    ("get", "/api/v1/openapi.json", "", "This document", &[]),
    (
        "post",
        "/api/v1/adsets",
        "operator",
        "Upload an ad set (TOML or JSON by Content-Type); a new revision, pending until approved",
        &[],
    ),
    (
        "get",
        "/api/v1/adsets",
        "operator, auditor",
        "Ad sets with their revisions",
        &[],
    ),
    (
        "get",
        "/api/v1/adsets/{id}",
        "operator, auditor",
        "One ad set with its revisions and their texts",
        &[],
    ),
    (
        "post",
        "/api/v1/adsets/{id}/approve",
        "operator (not the uploader), admin",
        "The latest revision plays from the feeds' next slot",
        &[],
    ),
    (
        "post",
        "/api/v1/adsets/{id}/retire",
        "operator",
        "Stop scheduling the ad set",
        &[],
    ),
    (
        "get",
        "/api/v1/devices",
        "operator, auditor",
        "Displays with their feeds and presence",
        &[],
    ),
    (
        "get",
        "/api/v1/feeds",
        "operator, auditor",
        "Feeds with their current play",
        &[],
    ),
    (
        "get",
        "/api/v1/audit/plays",
        "auditor",
        "Play counts",
        &[
            "from", "to", "group_by", "class", "device", "slogan", "feed", "status", "format",
        ],
    ),
    (
        "get",
        "/api/v1/audit/compliance",
        "auditor",
        "Per-display rotation compliance",
        &["from", "to", "class", "device", "format"],
    ),
    (
        "get",
        "/api/v1/audit/sample",
        "auditor",
        "The weekly inspection sample, stratified by class",
        &["week", "seed", "per_class", "format"],
    ),
    (
        "get",
        "/api/v1/audit/reconcile",
        "auditor",
        "Planned versus played per feed and day",
        &["from", "to", "feed", "format"],
    ),
];

fn error_schema() -> Value {
    json!({"type": "object", "required": ["error", "details"], "properties": {
        "error": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": ["string", "null"]}, "line": {"type": "integer"}, "message": {"type": "string"}}}}}})
}

/// The whole document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, roles, summary, params) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "Missing or wrong token"},
                "403": {"description": "Wrong role"},
            }
        });
        if !roles.is_empty() {
            op["security"] = json!([{"bearer": []}]);
            op["description"] = json!(format!("Roles: {roles} (admin may do all)."));
        } else {
            op["security"] = json!([]);
        }
        let mut ps: Vec<Value> = params
            .iter()
            .map(|p| json!({"name": p, "in": "query", "required": false, "schema": {"type": "string"}}))
            .collect();
        if path.contains("{id}") {
            ps.push(
                json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
        if !ps.is_empty() {
            op["parameters"] = Value::Array(ps);
        }
        if *method == "post" && *path == "/api/v1/adsets" {
            op["requestBody"] = json!({"required": true, "content": {
                "application/toml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}}}});
            op["responses"]["201"] = json!({"description": "Stored as a pending revision"});
            op["responses"]["413"] = json!({"description": "Over 1 MiB"});
            op["responses"]["415"] = json!({"description": "Neither TOML nor JSON"});
            op["responses"]["422"] = json!({"description": "Every problem, with field and line",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "civicast", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Keeps public-service slogans rotating on a city's displays and proves every play."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": error_schema()}
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}
