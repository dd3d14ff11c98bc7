//! The OpenAPI 3.1 document served at `/api/v1/openapi.json` (a token of any role): every
//! route with the roles it takes, its parameters with their types and values, every status
//! it can answer and the JSON Schema of every body, CSV for the audit routes, and links
//! from an upload to what can be done with it next.
//!
//! Built by hand from the table below. `tests/api.rs` keeps it honest: it calls every method
//! of every documented path on the real router (documented ones are served, the others are
//! 405), checks each route's roles against `x-roles`, and validates live answers of every
//! route and role against the schemas here; `ci/schemathesis.sh` fuzzes the running daemon
//! against it.
//!
//! Owns: the document's text. Must not touch the handlers' behaviour; it describes them.

use axum::Json;
use serde_json::{json, Map, Value};

mod inspect;

/// One operation of the document.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    /// Roles besides admin; empty: no token needed.
    pub roles: &'static [&'static str],
    pub summary: &'static str,
    pub query: &'static [&'static str],
    /// Statuses besides 200 (201 for an upload) and those of the token check.
    pub errors: &'static [u16],
    /// The schema (in `components`) of the success answer.
    pub answer: &'static str,
    pub csv: bool,
}

const READERS: &[&str] = &["operator", "auditor"];
const AUDITOR: &[&str] = &["auditor"];
const OPERATOR: &[&str] = &["operator"];

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        operation_id: "health",
        roles: &[],
        summary: "Broker and database state; 503 while either is down",
        query: &[],
        errors: &[503],
        answer: "Health",
        csv: false,
    },
    Route {
        method: "get",
        path: "/metrics",
        operation_id: "metrics",
        roles: &[],
        summary: "Prometheus metrics (text exposition format)",
        query: &[],
        errors: &[],
        answer: "",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/openapi.json",
        operation_id: "openapi",
        roles: &["operator", "auditor", "admin"],
        summary: "This document",
        query: &[],
        errors: &[],
        answer: "Document",
        csv: false,
    },
    Route {
        method: "post",
        path: "/api/v1/adsets",
        operation_id: "uploadAdSet",
        roles: OPERATOR,
        summary: "Upload an ad set (TOML or JSON by Content-Type); a new revision, pending until approved",
        query: &[],
        errors: &[400, 413, 415, 422],
        answer: "Upload",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/adsets",
        operation_id: "listAdSets",
        roles: READERS,
        summary: "Ad sets with their revisions",
        query: &[],
        errors: &[],
        answer: "AdSetList",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/adsets/{id}",
        operation_id: "showAdSet",
        roles: READERS,
        summary: "One ad set with its revisions and their texts",
        query: &[],
        errors: &[400, 404],
        answer: "AdSet",
        csv: false,
    },
    Route {
        method: "post",
        path: "/api/v1/adsets/{id}/approve",
        operation_id: "approveAdSet",
        roles: OPERATOR,
        summary: "The latest revision plays from the feeds' next slot (not by its uploader, unless admin)",
        query: &[],
        errors: &[400, 404, 409],
        answer: "Approval",
        csv: false,
    },
    Route {
        method: "post",
        path: "/api/v1/adsets/{id}/retire",
        operation_id: "retireAdSet",
        roles: OPERATOR,
        summary: "Stop scheduling the ad set",
        query: &[],
        errors: &[400, 404],
        answer: "Retirement",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/devices",
        operation_id: "listDevices",
        roles: READERS,
        summary: "Displays with their feeds and presence",
        query: &[],
        errors: &[],
        answer: "DeviceList",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/feeds",
        operation_id: "listFeeds",
        roles: READERS,
        summary: "Feeds with their current play",
        query: &[],
        errors: &[],
        answer: "FeedList",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/preview",
        operation_id: "preview",
        roles: READERS,
        summary: "A text or a stored slogan as a class draws it on its 16-pixel-high LED matrix (GNU Unifont; an approximation of the controller's own font)",
        query: &["text", "class", "adset", "slogan", "rev"],
        errors: &[400, 422],
        answer: "PreviewAnswer",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/preview.svg",
        operation_id: "previewSvg",
        roles: READERS,
        summary: "The same preview as an SVG image of the matrix, for pages without JavaScript (one class)",
        query: &["text", "class", "adset", "slogan", "rev"],
        errors: &[400, 422],
        answer: "image/svg+xml",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/audit/plays",
        operation_id: "auditPlays",
        roles: AUDITOR,
        summary: "Play counts",
        query: &[
            "from", "to", "group_by", "class", "device", "slogan", "feed", "status", "format",
        ],
        errors: &[400],
        answer: "Plays",
        csv: true,
    },
    Route {
        method: "get",
        path: "/api/v1/audit/compliance",
        operation_id: "auditCompliance",
        roles: AUDITOR,
        summary: "Per-display rotation compliance",
        query: &["from", "to", "class", "device", "format"],
        errors: &[400],
        answer: "Compliance",
        csv: true,
    },
    Route {
        method: "get",
        path: "/api/v1/audit/sample",
        operation_id: "auditSample",
        roles: AUDITOR,
        summary: "The weekly inspection sample, stratified by class",
        query: &["week", "seed", "per_class", "format"],
        errors: &[400],
        answer: "Sample",
        csv: true,
    },
    Route {
        method: "get",
        path: "/api/v1/audit/reconcile",
        operation_id: "auditReconcile",
        roles: AUDITOR,
        summary: "Planned versus played per feed and day",
        query: &["from", "to", "feed", "format"],
        errors: &[400],
        answer: "Reconcile",
        csv: true,
    },
    Route {
        method: "post",
        path: "/api/v1/urgent",
        operation_id: "sendUrgent",
        roles: OPERATOR,
        summary: "Send an urgent message: an admin's is published at once (201); an operator's waits for a second operator's approval (202)",
        query: &[],
        errors: &[400, 413, 422],
        answer: "Urgent",
        csv: false,
    },
    Route {
        method: "get",
        path: "/api/v1/urgent",
        operation_id: "listUrgent",
        roles: READERS,
        summary: "Urgent messages with their status, newest request first",
        query: &[],
        errors: &[],
        answer: "UrgentList",
        csv: false,
    },
    Route {
        method: "post",
        path: "/api/v1/urgent/{id}/approve",
        operation_id: "approveUrgent",
        roles: OPERATOR,
        summary: "Approve a pending urgent message (not by its requester, unless admin): it is published at once",
        query: &[],
        errors: &[400, 404, 409, 422],
        answer: "Urgent",
        csv: false,
    },
    Route {
        method: "post",
        path: "/api/v1/urgent/{id}/cancel",
        operation_id: "cancelUrgent",
        roles: OPERATOR,
        summary: "Withdraw a pending urgent message, or end a published one early (the rotation resumes at the feeds' next slot)",
        query: &[],
        errors: &[400, 404, 409],
        answer: "Urgent",
        csv: false,
    },
    Route {
        method: "get",
        path: "/log/checkpoint",
        operation_id: "logCheckpoint",
        roles: &[],
        summary: "The receipt log's newest signed checkpoint (C2SP tlog-checkpoint in a C2SP signed note, Ed25519), witnesses' cosignature lines (cosignature/v1) after the log's; cached 5 s",
        query: &[],
        errors: &[404],
        answer: "text/plain",
        csv: false,
    },
    Route {
        method: "get",
        path: "/log/tile/{path}",
        operation_id: "logTile",
        roles: &[],
        summary: "A C2SP tlog-tiles tile: `<L>/<N>[.p/<W>]` (hashes of level L, 32 bytes each) or `entries/<N>[.p/<W>]` (leaves, each a big-endian u16 length and the leaf's data), N in three-digit groups (x001/x234/067); only within the newest signed checkpoint; immutable",
        query: &[],
        errors: &[404, 410],
        answer: "application/octet-stream",
        csv: false,
    },
    Route {
        method: "get",
        path: "/log/proof/inclusion",
        operation_id: "logInclusionProof",
        roles: &[],
        summary: "The leaf holding a display's receipt for a play, its data and its RFC 6962 inclusion proof in the tree of tree_size leaves (default: the newest signed size)",
        query: &["device", "play_id", "tree_size"],
        errors: &[400, 404, 410],
        answer: "InclusionProof",
        csv: false,
    },
    Route {
        method: "get",
        path: "/log/proof/consistency",
        operation_id: "logConsistencyProof",
        roles: &[],
        summary: "The RFC 6962 consistency proof from the tree of old_size leaves to the tree of new_size leaves (at most the newest signed size); immutable",
        query: &["old_size", "new_size"],
        errors: &[400],
        answer: "ConsistencyProof",
        csv: false,
    },
];

/// A parameter of the receipt log's routes.
fn log_param(name: &str) -> Value {
    let (required, what) = match name {
        "device" => (true, "The display's id"),
        "play_id" => (true, "The play's id"),
        "tree_size" => (
            false,
            "The tree the proof is in: a signed size; absent: the newest",
        ),
        "old_size" => (true, "The smaller tree's size"),
        "new_size" => (
            true,
            "The larger tree's size, at most the newest signed size",
        ),
        _ => (false, ""),
    };
    let schema = match name {
        "device" | "play_id" => json!({"type": "string"}),
        _ => json!({"type": "integer", "minimum": 0}),
    };
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": what})
}

fn log_schemas() -> Value {
    let b64 = json!({"type": "string", "contentEncoding": "base64"});
    let hashes = json!({"type": "array", "items": b64});
    let size = json!({"type": "integer", "minimum": 0});
    json!({
        "InclusionProof": strict(&["leaf_index", "tree_size", "leaf", "proof"], json!({
            "leaf_index": size, "tree_size": size,
            "leaf": {"type": "string", "contentEncoding": "base64", "description": "The leaf's data: version byte 1, u32 count, then each receipt (u16-length display id, u16-length play id, i64 start ms, i64 duration ms, u8 status), big-endian"},
            "proof": hashes})),
        "ConsistencyProof": strict(&["old_size", "new_size", "proof"], json!({
            "old_size": size, "new_size": size, "proof": hashes})),
    })
}

/// A query parameter's schema and description.
fn query_param(name: &str) -> Value {
    let (schema, what) = match name {
        "from" => (
            json!({"type": "string"}),
            "Start (inclusive): RFC 3339 time or date (its midnight in the deployment's time zone); empty: as absent",
        ),
        "to" => (
            json!({"type": "string"}),
            "End (exclusive): RFC 3339 time or date; empty: as absent",
        ),
        "group_by" => (
            json!({"type": "string"}),
            "Comma list of slogan, adset, device, class, feed, day, hour",
        ),
        "class" => (json!({"type": "string"}), "A display class; an unknown one is a 400"),
        "device" => (json!({"type": "string"}), "A display id; an unknown one is a 400"),
        "slogan" => (json!({"type": "string"}), "A slogan id"),
        "feed" => (json!({"type": "string"}), "A feed id; an unknown one is a 400"),
        "status" => (
            json!({"type": "string", "enum": ["played", "skipped", "expired", "failed", ""], "default": "played"}),
            "Receipt status counted; empty: played",
        ),
        "format" => (
            json!({"type": "string", "enum": ["json", "csv", "xlsx", ""]}),
            "Answer format: json, csv (the rows under a header line) or xlsx (a workbook: sheet `report` with the same columns, typed cells and a frozen header row, times as dates in the deployment's time zone; sheet `query` with the query, the zone and any total); empty or absent: by the Accept header (text/csv or application/vnd.openxmlformats-officedocument.spreadsheetml.sheet), else JSON. CSV and XLSX come as attachments named civicast-REPORT-FROM-TO",
        ),
        "week" => (
            json!({"type": "string", "pattern": "^([0-9]{4}-W[0-9]{2})?$"}),
            "ISO week, e.g. 2026-W48; empty or absent: the current week",
        ),
        "seed" => (
            json!({"type": "string"}),
            "Sample seed: the same inputs draw the same sample",
        ),
        // Text, as every query value is: empty means the default, like the other optional
        // parameters (a form sends its empty fields).
        "per_class" => (
            json!({"type": "string", "pattern": "^([0-9]*[1-9][0-9]*)?$"}),
            "Displays drawn per class, a positive whole number; empty or absent: the default",
        ),
        _ => (json!({"type": "string"}), ""),
    };
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": what})
}

/// A parameter of the preview routes.
fn preview_param(name: &str) -> Value {
    let what = match name {
        "text" => "The text to draw (with class); at most 1000 characters, and what the class can show",
        "class" => "The display class to draw for; with adset and slogan and without class: every class the ad set reaches (the SVG needs one)",
        "adset" => "A stored ad set (with slogan), instead of text",
        "slogan" => "A slogan id of that ad set",
        "rev" => "The ad set's revision; empty or absent: the latest (a pending one too)",
        _ => "",
    };
    json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": what})
}

fn error_body(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn error_response(status: u16, path: &str) -> Value {
    if path.starts_with("/api/v1/urgent") {
        if let Some(text) = urgent_error(status) {
            return error_body(text);
        }
    }
    if let Some(text) = inspect::error(status, path) {
        return error_body(text);
    }
    if path.starts_with("/log/") {
        return error_body(match status {
            400 => "A size outside the signed tree, or a parameter missing: the details name it",
            404 => "No checkpoint signed yet, no such receipt or tile, or beyond the newest signed checkpoint",
            410 => "Receipts of that leaf were dropped by retention: its data can no longer be served",
            _ => "Error",
        });
    }
    let mut r = error_body(match status {
        400 => "Invalid input: the details name the parameter or field",
        401 => "Missing, unknown or revoked token",
        403 => "The token's role may not do this",
        404 => "No such ad set",
        409 => "The ad set is retired, or its latest revision is approved already",
        413 => "Body over 1 MiB",
        415 => "Content-Type neither TOML nor JSON",
        422 => "The ad set has problems, each with its field and line (the first 100, then a count); nothing was stored",
        503 => "The database is unavailable, or too many uploads and reports at once; try again after Retry-After seconds",
        _ => "Error",
    });
    if status == 401 {
        r["headers"] = json!({"WWW-Authenticate": {"required": true, "schema": {"type": "string", "const": "Bearer"}}});
    }
    if status == 503 {
        r["headers"] =
            json!({"Retry-After": {"required": true, "schema": {"type": "integer", "minimum": 1}}});
    }
    r
}

/// The urgent routes' own words for their errors.
fn urgent_error(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Not the JSON of an urgent message, or no expiry: the details name the field",
        403 => "The token's role may not do this, or an operator approves their own request",
        404 => "No such urgent message",
        409 => "The urgent message is no longer pending (published, expired or cancelled), or is closed already",
        413 => "Body over 1 MiB",
        422 => "The message has problems, each naming its field (text too long or not drawable for a class of a display it reaches, unknown feed or display, expiry in the past or too far ahead, no targets); nothing was published",
        _ => return None,
    })
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn strict(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

/// The JSON Schemas of every answer, by name.
fn schemas() -> Value {
    let s = json!({"type": "string"});
    let int = json!({"type": "integer"});
    let count = json!({"type": "integer", "minimum": 0});
    let num = json!({"type": "number"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let rows = |item: &str| {
        strict(
            &["rows"],
            json!({"rows": {"type": "array", "items": r(item)}}),
        )
    };
    let mut all = json!({
        "Error": strict(&["error", "details"], json!({
            "error": s,
            "details": {"type": "array", "items": r("Detail")}})),
        "Detail": strict(&["field", "message"], json!({
            "field": nullable("string"), "line": {"type": "integer", "minimum": 1}, "message": s})),
        "Health": strict(&["status", "broker", "database"], json!({
            "status": {"enum": ["ok", "degraded"]},
            "broker": {"enum": ["connected", "disconnected"]},
            "database": s})),
        "Document": {"type": "object", "required": ["openapi", "paths"]},
        "Upload": strict(&["id", "rev", "status", "uploaded_by", "warnings"], json!({
            "id": s, "rev": {"type": "integer", "minimum": 1}, "status": {"const": "pending"},
            "uploaded_by": s, "warnings": strings})),
        "AdSetList": rows("AdSetSummary"),
        "AdSetSummary": adset_schema(false),
        "AdSet": adset_schema(true),
        "Approval": strict(&["id", "rev", "status", "approved_by", "playing"], json!({
            "id": s, "rev": int, "status": {"const": "approved"}, "approved_by": s,
            "playing": {"type": "boolean", "description": "Whether it plays now (valid today, on a feed with members)"}})),
        "Retirement": strict(&["id", "status", "retired_by"], json!({
            "id": s, "status": {"const": "retired"}, "retired_by": s})),
    });
    let more = json!({
        "DeviceList": rows("Device"),
        "Device": strict(&["id", "class", "attrs", "feeds", "online"], json!({
            "id": s, "class": s,
            "attrs": {"type": "object", "additionalProperties": {"type": "string"}},
            "feeds": strings,
            "online": {"type": ["boolean", "null"], "description": "Last presence report; null: none yet"}})),
        "FeedList": rows("Feed"),
        "Feed": strict(&["id", "interval_s", "daypart", "select", "members", "current"], json!({
            "id": s, "interval_s": num, "daypart": nullable("string"),
            "select": {"type": "object", "additionalProperties": strings},
            "members": count,
            "current": {"oneOf": [r("PlayCommand"), {"type": "null"}]}})),
        "PlayCommand": strict(&["v", "play_id", "adset", "rev", "slogan", "text", "duration_s", "priority", "issued_at", "expires_at"], json!({
            "v": {"const": 1}, "play_id": s, "feed": s, "adset": s, "rev": int, "slogan": s, "text": s,
            "text_by_class": {"type": "object", "additionalProperties": {"type": "string"}},
            "duration_s": count, "priority": int,
            "issued_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"}})),
        "Plays": strict(&["from", "to", "group_by", "status", "rows", "total"], json!({
            "from": nullable("string"), "to": nullable("string"),
            "group_by": {"type": "array", "items": {"enum": ["slogan", "adset", "device", "class", "feed", "day", "hour"]}},
            "status": {"enum": ["played", "skipped", "expired", "failed"]},
            "class": s, "device": s, "slogan": s, "feed": s,
            "rows": {"type": "array", "items": {
                "type": "object", "required": ["plays"],
                "properties": {"plays": count},
                "additionalProperties": {"type": ["string", "integer"]},
                "description": "One column per group_by key (its value as text), and plays"}},
            "total": count})),
    });
    let audits = json!({
        "Compliance": strict(&["from", "to", "mean_factor", "gap_factor", "rows"], json!({
            "from": s, "to": s, "class": s, "device": s, "mean_factor": num, "gap_factor": num,
            "rows": {"type": "array", "items": r("ComplianceRow")}})),
        "ComplianceRow": strict(&["device", "class", "online_seconds", "plays", "mean_interval_s", "longest_gap_s", "interval_s", "met"], json!({
            "device": s, "class": s, "online_seconds": num, "plays": count,
            "mean_interval_s": nullable("number"), "longest_gap_s": num,
            "interval_s": {"type": "number", "description": "The shortest rotation interval among its feeds: the target"},
            "met": {"type": "boolean"}})),
        "Sample": strict(&["week", "seed", "per_class", "from", "to", "rows"], json!({
            "week": s, "seed": s, "per_class": {"type": "integer", "minimum": 1}, "from": s, "to": s,
            "rows": {"type": "array", "items": r("SampleRow")}})),
        "SampleRow": strict(&["class", "device", "plays", "longest_gap_s", "last_receipt_at", "last_receipt_status", "met"], json!({
            "class": s, "device": s, "plays": count, "longest_gap_s": num,
            "last_receipt_at": nullable("string"),
            "last_receipt_status": {"enum": ["played", "skipped", "expired", "failed", null]},
            "met": {"type": "boolean"}})),
        "Reconcile": strict(&["from", "to", "rows"], json!({
            "from": s, "to": s, "feed": s,
            "rows": {"type": "array", "items": r("ReconcileRow")}})),
        "ReconcileRow": strict(&["feed", "day", "plays", "targeted", "online", "played", "shortfall", "offline", "expired", "skipped", "failed", "no_receipt"], json!({
            "feed": s, "day": {"type": "string", "format": "date"},
            "plays": count, "targeted": count, "online": count, "played": count,
            "shortfall": count, "offline": count, "expired": count, "skipped": count,
            "failed": count, "no_receipt": count})),
    });
    let input = json!({
        "AdSetInput": {
            "type": "object",
            "description": "An ad set as in schedules/adsets/*.toml (see the contract); every problem is a 422. A null counts as absent.",
            "required": ["id", "valid_from", "valid_until", "slogan"],
            "properties": {
                "id": s, "title": nullable("string"), "valid_from": s, "valid_until": s,
                "feeds": {"type": ["array", "null"], "items": {"type": "string"}},
                "priority": nullable("integer"),
                "slogan": {"type": "array", "items": {"type": "object", "required": ["id", "text"], "properties": {
                    "id": s, "text": s, "weight": {"type": ["integer", "null"], "minimum": 1},
                    "text_by_class": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}}}}},
    });
    let urgent = json!({
        "Urgent": strict(&["id", "text", "feeds", "devices", "expires_at", "status", "requested_by", "requested_at", "approved_by", "approved_at", "cancelled_by", "cancelled_at"], json!({
            "id": s, "text": s, "feeds": strings, "devices": strings,
            "expires_at": {"type": "string", "format": "date-time"},
            "status": {"enum": ["pending", "published", "expired", "cancelled"]},
            "requested_by": s, "requested_at": {"type": "string", "format": "date-time"},
            "approved_by": nullable("string"), "approved_at": nullable("string"),
            "cancelled_by": nullable("string"), "cancelled_at": nullable("string"),
            "displays": {"type": "integer", "minimum": 0, "description": "When just published: the displays it was sent to"},
            "plays": {"type": "integer", "minimum": 0, "description": "When just published: the plays recorded (one a target feed, one a display named on its own)"}})),
        "UrgentList": rows("Urgent"),
        "UrgentInput": {
            "type": "object", "additionalProperties": false, "required": ["text"],
            "description": "One text for every display of the feeds and every display named; checked like a slogan's text against each class it reaches. Give expires_at or expires_in (1 minute to 72 hours ahead).",
            "properties": {
                "text": s, "feeds": strings, "devices": strings,
                "expires_at": {"type": ["string", "null"], "format": "date-time", "description": "null: not given"},
                "expires_in": {"type": ["string", "null"], "description": "A duration from now: 30m, 2h; null: not given"}}},
    });
    for part in [
        more,
        audits,
        input,
        urgent,
        preview_schemas(),
        inspect::schemas(),
        log_schemas(),
    ] {
        if let (Some(a), Value::Object(b)) = (all.as_object_mut(), part) {
            a.extend(b);
        }
    }
    all
}

/// The preview answers: one class's drawing, or a stored slogan's, one a class.
fn preview_schemas() -> Value {
    let s = json!({"type": "string"});
    let px = json!({"type": "integer", "minimum": 1});
    json!({
        "PreviewAnswer": {"oneOf": [r("Preview"), r("SloganPreviews")]},
        "SloganPreviews": strict(&["adset", "rev", "slogan", "rows"], json!({
            "adset": s, "rev": {"type": "integer", "minimum": 1}, "slogan": s,
            "rows": {"type": "array", "items": r("Preview"),
                     "description": "One per class the ad set reaches (or the class asked for), each with the text that class is sent"}})),
        "Preview": strict(&["class", "text", "bitmap", "display_width", "fits", "layout", "offset_x", "scroll_px_per_s", "pass_s", "duration_s", "missing", "approximation"], json!({
            "class": s, "text": s,
            "bitmap": strict(&["width", "height", "rows"], json!({
                "width": {"type": "integer", "minimum": 0, "description": "Pixels: the sum of the glyphs' widths (8 half-width, 16 full-width)"},
                "height": {"const": 16},
                "rows": {"type": "array", "minItems": 16, "maxItems": 16,
                         "items": {"type": "string", "pattern": "^([0-9a-f]{2})*$"},
                         "description": "Each row ceil(width / 8) bytes in hex, the leftmost pixel in the high bit"}})),
            "display_width": {"type": "integer", "minimum": 8, "description": "The class's width_px"},
            "fits": {"type": "boolean"},
            "layout": {"enum": ["static", "scroll"], "description": "static: still, centred; scroll: right to left at scroll_px_per_s"},
            "offset_x": {"type": "integer", "minimum": 0, "description": "First column of the text on the matrix while static"},
            "scroll_px_per_s": px,
            "pass_s": {"type": ["number", "null"], "description": "Seconds one pass takes, (bitmap width + display width) / scroll_px_per_s; null when static"},
            "duration_s": {"type": "number", "description": "The class's time on screen for one play"},
            "missing": {"type": "array", "items": strict(&["position", "character", "codepoint"], json!({
                "position": {"type": "integer", "minimum": 1}, "character": s, "codepoint": s})),
                "description": "Characters GNU Unifont has no glyph for, drawn as empty boxes"},
            "approximation": s})),
    })
}

fn adset_schema(bodies: bool) -> Value {
    let s = json!({"type": "string"});
    let mut rev_props = json!({
        "rev": {"type": "integer", "minimum": 1},
        "status": {"enum": ["approved", "pending", "retired", "superseded"]},
        "origin": {"enum": ["upload", "file"]}, "format": {"enum": ["toml", "json"]},
        "uploaded_by": s, "uploaded_at": nullable("string"),
        "approved_by": nullable("string"), "approved_at": nullable("string"),
    });
    let mut rev_required = vec![
        "rev",
        "status",
        "origin",
        "format",
        "uploaded_by",
        "uploaded_at",
        "approved_by",
        "approved_at",
    ];
    if bodies {
        rev_props["body"] = json!({"type": "string", "description": "The revision as uploaded"});
        rev_required.push("body");
    }
    strict(
        &[
            "id",
            "status",
            "latest_rev",
            "playing_rev",
            "retired_by",
            "retired_at",
            "revisions",
        ],
        json!({
            "id": s, "status": {"enum": ["approved", "pending", "retired"]},
            "latest_rev": nullable("integer"), "playing_rev": nullable("integer"),
            "retired_by": nullable("string"), "retired_at": nullable("string"),
            "revisions": {"type": "array", "items": strict(&rev_required, rev_props)},
        }),
    )
}

/// The query parameters of a route, and its `{id}`.
fn parameters(route: &Route) -> Vec<Value> {
    let preview = route.path.starts_with("/api/v1/preview");
    let log = route.path.starts_with("/log/");
    let mut ps: Vec<Value> = route
        .query
        .iter()
        .map(|p| match (preview, log) {
            (true, _) => preview_param(p),
            (_, true) => log_param(p),
            _ => inspect::query_param(p).unwrap_or_else(|| query_param(p)),
        })
        .collect();
    if route.path.contains("{path}") {
        ps.push(
            json!({"name": "path", "in": "path", "required": true, "schema": {"type": "string"},
                       "description": "The tile's C2SP path after tile/"}),
        );
    }
    if route.path.contains("{id}") {
        ps.push(
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"},
                       "description": id_description(route.path)}),
        );
    }
    ps
}

/// What the `{id}` of a path names.
fn id_description(path: &str) -> &'static str {
    if path.starts_with("/api/v1/urgent") {
        "Urgent message id"
    } else if path.starts_with("/api/v1/inspections/photos") {
        "A photo's SHA-256, in lower-case hex"
    } else if path.starts_with("/api/v1/inspections") {
        "Inspection id"
    } else if path.starts_with("/api/v1/findings") {
        "Finding id"
    } else {
        "Ad-set id"
    }
}

fn operation(route: &Route) -> Value {
    let ok = match (route.method, route.path) {
        ("post", "/api/v1/adsets")
        | ("post", "/api/v1/urgent")
        | ("post", "/api/v1/inspections")
        | ("post", "/api/v1/inspections/photos")
        | ("post", "/api/v1/findings/propose") => "201",
        _ => "200",
    };
    let mut content = Map::new();
    match route.answer {
        "" => {
            content.insert("text/plain".into(), json!({"schema": {"type": "string"}}));
        }
        // A media type: the answer is that document, as text.
        media if media.contains('/') => {
            content.insert(media.into(), json!({"schema": {"type": "string"}}));
        }
        name => {
            content.insert("application/json".into(), json!({"schema": r(name)}));
        }
    }
    if route.csv {
        content.insert(
            "text/csv".into(),
            json!({"schema": {"type": "string", "description": "The rows, one a line, under a header line of the same columns"}}),
        );
        content.insert(
            crate::reports::export::XLSX_MEDIA_TYPE.into(),
            json!({"schema": {"type": "string", "format": "binary", "description": "A workbook: sheet `report` (the CSV's columns, typed cells, frozen header row) and sheet `query`"}}),
        );
    }
    let mut responses = Map::new();
    if route.operation_id == "sendUrgent" {
        responses.insert(
            "202".into(),
            json!({"description": "An operator's request: pending until a second operator (or an admin) approves it", "content": content.clone()}),
        );
    }
    let mut success = json!({"description": route.summary, "content": content});
    if route.csv {
        success["headers"] = json!({"Content-Disposition": {
            "required": false,
            "description": "On CSV and XLSX: attachment; filename=\"civicast-REPORT-FROM-TO.csv\" (or .xlsx)",
            "schema": {"type": "string"}}});
    }
    responses.insert(ok.into(), success);
    let secured = !route.roles.is_empty();
    let mut statuses: Vec<u16> = route.errors.to_vec();
    if secured {
        statuses.extend([401, 503]);
        if route.roles.len() < 3 {
            statuses.push(403);
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    for st in statuses {
        let v = if route.path == "/healthz" {
            json!({"description": "Broker or database down", "content": {"application/json": {"schema": r("Health")}}})
        } else {
            error_response(st, route.path)
        };
        responses.insert(st.to_string(), v);
    }
    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "responses": responses,
        "x-roles": route.roles,
    });
    if secured {
        op["security"] = json!([{"bearer": []}]);
        op["description"] = json!(format!(
            "Roles: {} (admin may do all).",
            route.roles.join(", ")
        ));
    } else {
        op["security"] = json!([]);
    }
    let ps = parameters(route);
    if !ps.is_empty() {
        op["parameters"] = Value::Array(ps);
    }
    if route.path.starts_with("/api/v1/preview") {
        op["responses"]["422"]["description"] = json!("The class, ad set, revision or slogan is unknown, or the class cannot show the text (too long, a character its charset lacks, a control character): the details name the parameter");
    }
    if route.operation_id == "uploadAdSet" {
        op["requestBody"] = json!({"required": true, "content": {
            "application/toml": {"schema": {"type": "string", "maxLength": crate::api::MAX_BODY}},
            "application/json": {"schema": r("AdSetInput"), "example": {
                "id": "wenming-2026-12", "title": "Civility month",
                "valid_from": "2026-12-01", "valid_until": "2099-12-31",
                "slogan": [{"id": "jiang-wenming", "text": "讲文明 树新风", "weight": 2}]}}}});
        let id = json!({"id": "$response.body#/id"});
        op["responses"]["201"]["links"] = json!({
            "ShowAdSet": {"operationId": "showAdSet", "parameters": id},
            "ApproveAdSet": {"operationId": "approveAdSet", "parameters": id},
            "RetireAdSet": {"operationId": "retireAdSet", "parameters": id},
        });
    }
    if route.operation_id == "sendUrgent" {
        op["requestBody"] = json!({"required": true, "content": {
            "application/json": {"schema": r("UrgentInput"), "example": {
                "text": "台风红色预警 请勿外出", "feeds": ["bus-led-all"], "devices": ["stop-0012"],
                "expires_in": "2h"}}}});
    }
    if let Some(b) = inspect::request_body(route.operation_id) {
        op["requestBody"] = b;
    }
    if route.operation_id == "scorecards" {
        op["responses"]["200"]["content"]["text/csv"] = json!({"schema": {"type": "string", "description": "Per company a row with item `all`, then one per item with findings"}});
        op["responses"]["200"]["content"][crate::reports::export::XLSX_MEDIA_TYPE] =
            json!({"schema": {"type": "string", "format": "binary"}});
    }
    if route.operation_id == "getPhoto" {
        for t in ["image/png", "image/webp"] {
            op["responses"]["200"]["content"][t] =
                json!({"schema": {"type": "string", "format": "binary"}});
        }
    }
    if route.operation_id == "approveAdSet" {
        op["responses"]["200"]["links"] = json!({
            "RetireAdSet": {"operationId": "retireAdSet", "parameters": {"id": "$response.body#/id"}},
            "ShowAdSet": {"operationId": "showAdSet", "parameters": {"id": "$response.body#/id"}},
        });
    }
    op
}

/// The whole document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES.iter().chain(inspect::ROUTES) {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "civicast", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Keeps public-service slogans rotating on a city's displays and proves every play. Every call but GET /healthz and GET /metrics needs Authorization: Bearer <token>; this document too. The web console (HTML, outside this document) answers at / on the same listener, signed in with the same tokens."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}
