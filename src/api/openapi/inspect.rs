//! The inspection, finding and scorecard routes of the OpenAPI document, with their bodies'
//! and answers' schemas (`api::inspect`).

use serde_json::{json, Value};

use super::{r, Route};

const INSPECTOR: &[&str] = &["inspector"];
const PLAN_READERS: &[&str] = &["inspector", "auditor"];
const FINDING_READERS: &[&str] = &["inspector", "auditor", "company"];
const COMPANY: &[&str] = &["company"];
const PHOTO_WRITERS: &[&str] = &["inspector", "company"];

// A row of the table below, one argument a column, as `Route`'s fields read.
#[allow(clippy::too_many_arguments)]
const fn route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    roles: &'static [&'static str],
    summary: &'static str,
    query: &'static [&'static str],
    errors: &'static [u16],
    answer: &'static str,
) -> Route {
    Route {
        method,
        path,
        operation_id,
        roles,
        summary,
        query,
        errors,
        answer,
        csv: false,
    }
}

pub const ROUTES: &[Route] = &[
    route("get", "/api/v1/inspections/plan", "inspectionPlan", PLAN_READERS, "The week's units to visit: a random sample per kind (reproducible from week and seed) and the fixed-frequency rules' units, each with the visits it needs and has had (due, done); last week's still short, overdue", &["week", "seed", "per_kind"], &[400], "InspectionPlan"),
    route("post", "/api/v1/inspections", "recordInspection", INSPECTOR, "Record a visit: every checklist item pass or fail with a note and photos; each failed item opens a finding handed to the unit's company with a deadline (201). A unit with a display carries the receipts of the 15 minutes before and after", &[], &[400, 413, 422], "Inspection"),
    route("get", "/api/v1/inspections", "listInspections", PLAN_READERS, "Visits, oldest first (default: the last 31 days)", &["from", "to", "unit"], &[400], "InspectionList"),
    route("get", "/api/v1/inspections/{id}", "showInspection", PLAN_READERS, "One visit", &[], &[404], "Inspection"),
    route("post", "/api/v1/inspections/photos", "uploadPhoto", PHOTO_WRITERS, "Store a photo (the body is the JPEG, PNG or WebP itself, at most 512 KiB, told by its first bytes) under its SHA-256 (201)", &[], &[413, 422], "Photo"),
    route("get", "/api/v1/inspections/photos/{id}", "getPhoto", FINDING_READERS, "A stored photo by its SHA-256 (a company: only photos of its own findings)", &[], &[403, 404], "image/jpeg"),
    route("get", "/api/v1/findings", "listFindings", FINDING_READERS, "Findings with their events, oldest first; a company's token sees its own units' only", &["state", "unit", "overdue"], &[400, 403], "FindingList"),
    route("post", "/api/v1/findings/propose", "proposeFindings", INSPECTOR, "Every display that was online a whole day without meeting its cadence becomes a proposed finding (201), handed over only once an inspector confirms it", &[], &[400, 413, 422], "FindingList"),
    route("get", "/api/v1/findings/{id}", "showFinding", FINDING_READERS, "One finding with its events (another company's is not found)", &[], &[403, 404], "Finding"),
    route("post", "/api/v1/findings/{id}/rectify", "rectifyFinding", COMPANY, "The company's fix of an open finding: a note and photos", &[], &[400, 404, 409, 413, 422], "Finding"),
    route("post", "/api/v1/findings/{id}/recheck", "recheckFinding", INSPECTOR, "An inspector's recheck of a rectified finding (not by the account that fixed it): result closed or reopened", &[], &[400, 403, 404, 409, 413, 422], "Finding"),
    route("post", "/api/v1/findings/{id}/recheck-from-receipts", "recheckFindingFromReceipts", INSPECTOR, "Close a rectified finding on a display that met its cadence on each of the recheck_days days after the fix; 409 naming the days that fall short", &[], &[400, 403, 404, 409], "Finding"),
    route("post", "/api/v1/findings/{id}/deadline", "findingDeadline", INSPECTOR, "A new deadline (in the future) for a finding", &[], &[400, 404, 409, 413, 422], "Finding"),
    route("post", "/api/v1/findings/{id}/confirm", "confirmFinding", INSPECTOR, "Hand a proposed finding over to its company, with the item's default deadline or the one given", &[], &[400, 404, 409, 413, 422], "Finding"),
    route("post", "/api/v1/findings/{id}/dismiss", "dismissFinding", INSPECTOR, "A proposed finding not handed over", &[], &[400, 404, 409, 413, 422], "Finding"),
    route("get", "/api/v1/scorecards", "scorecards", FINDING_READERS, "A month per company for its credit record: units, inspections, findings (by item), fixed on time, overdue, repeat findings on the same unit, open, displays meeting their cadence; as JSON, CSV or XLSX (a company: its own)", &["month", "company", "format"], &[400, 403, 404], "Scorecards"),
];

/// The query parameters of these routes.
pub fn query_param(name: &str) -> Option<Value> {
    let (schema, what) = match name {
        "per_kind" => (
            json!({"type": "string", "pattern": "^[0-9]*$"}),
            "Units drawn per kind; absent: devices/inspections.toml's [sample]",
        ),
        "unit" => (json!({"type": "string"}), "A unit id"),
        "state" => (
            json!({"type": "string", "enum": ["proposed", "open", "rectified", "closed", "dismissed", ""]}),
            "Only findings in this state",
        ),
        "overdue" => (
            json!({"type": "string", "enum": ["true", "false"]}),
            "Only findings open past their deadline (true) or not (false)",
        ),
        "month" => (
            json!({"type": "string", "pattern": "^([0-9]{4}-[0-9]{2})?$"}),
            "A month, 2026-11; absent: the current one",
        ),
        "company" => (json!({"type": "string"}), "One operating company"),
        _ => return None,
    };
    Some(
        json!({"name": name, "in": "query", "required": false, "schema": schema, "description": what}),
    )
}

/// The request body of a POST route, by operation id.
pub fn request_body(operation_id: &str) -> Option<Value> {
    let change = json!({"type": "object", "additionalProperties": false, "properties": {
        "note": {"type": "string"}, "photos": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "deadline": {"type": "string", "format": "date-time"}, "result": {"enum": ["closed", "reopened"]}}});
    Some(match operation_id {
        "recordInspection" => {
            json!({"required": true, "content": {"application/json": {"schema": r("InspectionInput"), "example": {
            "unit": "bus-noboard-0001", "at": "2026-11-24T10:00:00+08:00",
            "items": [{"item": "ads", "pass": true}, {"item": "atmosphere", "pass": true},
                      {"item": "cleanliness", "pass": false, "note": "litter under the seats", "photos": []}]}}}})
        }
        "uploadPhoto" => {
            json!({"required": true, "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}}, "image/webp": {"schema": {"type": "string", "format": "binary"}}}})
        }
        "proposeFindings" => {
            json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["day"], "properties": {"day": {"type": "string", "format": "date"}}, "additionalProperties": false}}}})
        }
        "rectifyFinding" | "recheckFinding" | "findingDeadline" | "confirmFinding"
        | "dismissFinding" => {
            json!({"required": false, "content": {"application/json": {"schema": change}}})
        }
        _ => return None,
    })
}

/// The schemas of these routes' bodies and answers.
pub fn schemas() -> Value {
    let s = json!({"type": "string"});
    let count = json!({"type": "integer", "minimum": 0});
    let time = json!({"type": "string", "format": "date-time"});
    let counts = json!({"type": "object", "required": ["findings", "fixed_on_time", "overdue", "repeat", "open"], "properties": {
        "findings": count, "fixed_on_time": count, "overdue": count, "repeat": count, "open": count}});
    json!({
        "InspectionPlan": {"type": "object", "required": ["week", "seed", "from", "to", "due", "overdue", "done", "rows"], "properties": {
            "week": s, "seed": s, "from": time, "to": time, "due": count, "overdue": count, "done": count,
            "rows": {"type": "array", "items": {"type": "object", "required": ["week", "unit", "kind", "company", "reasons", "required", "visits", "status"], "properties": {
                "week": s, "unit": s, "kind": {"enum": ["bus", "taxi", "stop", "station"]}, "company": s, "display": {"type": ["string", "null"]},
                "reasons": {"type": "array", "items": {"enum": ["sample", "rule"]}}, "required": count, "visits": count,
                "status": {"enum": ["due", "done", "overdue"]}}}}}},
        "ItemResult": {"type": "object", "required": ["item", "pass"], "additionalProperties": false, "properties": {
            "item": s, "pass": {"type": "boolean"}, "note": s,
            "photos": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
            "deadline": {"type": "string", "format": "date-time", "description": "A failed item's deadline instead of the item's default; in the future"}}},
        "InspectionInput": {"type": "object", "required": ["unit", "items"], "additionalProperties": false, "properties": {
            "unit": s, "at": time, "items": {"type": "array", "items": r("ItemResult")}}},
        "Inspection": {"type": "object", "required": ["id", "unit", "company", "at", "by", "recorded_at", "items", "evidence"], "properties": {
            "id": s, "unit": s, "company": s, "at": time, "by": s, "recorded_at": time,
            "items": {"type": "array", "items": r("ItemResult")},
            "evidence": {"type": ["object", "null"], "description": "For a unit with a display: plays in the 15 minutes before and after the visit, and when it was online"},
            "findings": {"type": "array", "items": s, "description": "On a new visit: the findings it opened"}}},
        "InspectionList": {"type": "object", "required": ["rows"], "properties": {"rows": {"type": "array", "items": r("Inspection")}}},
        "Photo": {"type": "object", "required": ["sha256", "media_type", "bytes"], "properties": {
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "media_type": {"enum": ["image/jpeg", "image/png", "image/webp"]}, "bytes": count}},
        "Finding": {"type": "object", "required": ["id", "unit", "company", "item", "state", "deadline", "overdue", "events"], "properties": {
            "id": s, "unit": s, "company": s, "item": s, "inspection": {"type": ["string", "null"]}, "display": {"type": ["string", "null"]},
            "state": {"enum": ["proposed", "open", "rectified", "closed", "dismissed"]}, "deadline": {"type": ["string", "null"]},
            "overdue": {"type": "boolean"},
            "events": {"type": "array", "items": {"type": "object", "required": ["seq", "kind", "at", "by"], "properties": {
                "seq": {"type": "integer", "minimum": 1}, "kind": {"enum": ["proposed", "opened", "dismissed", "deadline", "rectified", "closed", "reopened"]},
                "at": time, "by": s, "note": {"type": ["string", "null"]}, "photos": {"type": "array", "items": s},
                "deadline": {"type": ["string", "null"]}, "source": {"type": ["string", "null"]}}}}}},
        "FindingList": {"type": "object", "required": ["rows"], "properties": {"rows": {"type": "array", "items": r("Finding")}}},
        "Scorecards": {"type": "object", "required": ["month", "from", "to", "rows"], "properties": {
            "month": s, "from": time, "to": time, "company": {"type": ["string", "null"]},
            "rows": {"type": "array", "items": {"allOf": [counts, {"type": "object", "required": ["company", "units", "units_by_kind", "inspections", "inspected_units", "findings_by_item", "displays", "displays_met", "compliance"], "properties": {
                "company": s, "units": count, "units_by_kind": {"type": "object"}, "inspections": count, "inspected_units": count,
                "findings_by_item": {"type": "object", "additionalProperties": counts},
                "displays": count, "displays_met": count, "compliance": {"type": ["number", "null"]}}}]}}}},
    })
}

/// These routes' own words for their errors (401 and 503 are the common ones').
pub fn error(status: u16, path: &str) -> Option<&'static str> {
    let ours = [
        "/api/v1/inspections",
        "/api/v1/findings",
        "/api/v1/scorecards",
    ];
    if !ours.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    Some(match status {
        400 => "Not the JSON or query this route takes: the details name the field",
        403 => "The token's role may not do this, a company token bound to no company, or a recheck by the account that made the fix",
        404 => "No such inspection, photo, finding or company (another company's finding is not found for a company's token)",
        409 => "The finding is not in a state that allows this (closed or dismissed: no change at all; a recheck before a fix), or its receipts fall short",
        413 => "A photo over 512 KiB, or a body over 1 MiB",
        422 => "Refused, nothing stored: an unknown unit or checklist item, an item unanswered, a deadline in the past, an unknown photo, a file that is not an image, a result other than closed or reopened",
        _ => return None,
    })
}
