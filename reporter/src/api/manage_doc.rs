//! The OpenAPI entries of campaign management ([`super::manage`]), merged into the document
//! served at `/api/v1/openapi.json` (methods added to a path the reporting routes already have).

use serde_json::{Value, json};

fn op(summary: &str, body: Option<&str>, params: &[&str]) -> Value {
    let mut o = json!({
        "summary": summary,
        "security": [{ "bearer": [] }],
        "parameters": params.iter().map(|p| json!({
            "name": p, "in": "path", "required": true, "schema": { "type": "integer" } })).collect::<Vec<_>>(),
        "responses": {
            "200": { "description": "accepted: `set_version`, `published`, `campaign_id`, `result` (the stored version and spec)" },
            "401": { "description": "no or bad token" },
            "403": { "description": "not allowed for this token (e.g. another advertiser's id in the body)" },
            "404": { "description": "no such campaign for this token (another advertiser's campaign is not found)" },
            "409": { "description": "archived campaigns cannot change" },
            "422": { "description": "refused: `{error: \"invalid\", message, errors: [{field, problem}]}`; the rules are the bidder's (docs/CAMPAIGNS.md)",
                     "content": { "application/json": { "schema": { "$ref": "#/components/schemas/FieldErrors" } } } },
            "503": { "description": "database or campaign management unavailable" }
        }
    });
    if let Some(b) = body {
        o["requestBody"] = json!({ "required": true, "description": b,
            "content": { "application/json": { "schema": { "type": "object" } } } });
    }
    o
}

fn get_op(summary: &str, params: &[&str]) -> Value {
    json!({
        "summary": summary,
        "security": [{ "bearer": [] }],
        "parameters": params.iter().map(|p| json!({
            "name": p, "in": "path", "required": true, "schema": { "type": "integer" } })).collect::<Vec<_>>(),
        "responses": { "200": { "description": "OK" }, "401": { "description": "no or bad token" },
                       "404": { "description": "not found for this token" } }
    })
}

/// Adds the management paths (and the `FieldErrors` schema) to `doc`.
pub fn add(doc: &mut Value) {
    let c = ["campaign_id"];
    let cc = ["campaign_id", "creative_id"];
    let entries: Vec<(&str, &str, Value)> = vec![
        (
            "/api/v1/advertisers",
            "post",
            op(
                "Create or rename an advertiser (operators only): {advertiser_id, name, utc_offset_minutes}",
                Some("advertiser"),
                &[],
            ),
        ),
        (
            "/api/v1/campaigns",
            "post",
            op(
                "Create a campaign. Body: one campaign in the campaigns-file format (docs/CAMPAIGNS.md); `id` optional; an advertiser token fills in advertiser_id",
                Some("campaign spec"),
                &[],
            ),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/spec",
            "get",
            get_op("The campaign's current spec and version", &c),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/spec",
            "put",
            op(
                "Replace the campaign's spec (id and advertiser cannot change)",
                Some("campaign spec"),
                &c,
            ),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/status",
            "put",
            op(
                "Pause (`paused`), resume (`active`) or archive (`archived`, final)",
                Some("{status}"),
                &c,
            ),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/budget",
            "put",
            op(
                "Change total/daily budget (micros) and pacing; the remaining budget in Redis moves by the difference",
                Some("{total_budget_micros, daily_budget_micros?, pacing?}"),
                &c,
            ),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/creatives",
            "post",
            op("Add a creative", Some("creative"), &c),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/creatives/{creative_id}",
            "put",
            op("Replace a creative", Some("creative"), &cc),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/creatives/{creative_id}",
            "delete",
            op(
                "Archive a creative (it leaves the bidding set; kept in the versions)",
                None,
                &cc,
            ),
        ),
        (
            "/api/v1/campaigns/{campaign_id}/versions",
            "get",
            get_op(
                "Every version of the campaign, newest first: spec, who, when, set version",
                &c,
            ),
        ),
        (
            "/api/v1/audit",
            "get",
            get_op(
                "The audit log, newest first (operators: all; advertisers: their own). Query: campaign_id, advertiser_id",
                &[],
            ),
        ),
        (
            "/api/v1/campaign-set",
            "get",
            get_op(
                "The campaign-set version stored and the one published in Redis",
                &[],
            ),
        ),
    ];
    for (path, method, o) in entries {
        let paths = &mut doc["paths"];
        if paths.get(path).is_none() {
            paths[path] = json!({});
        }
        paths[path][method] = o;
    }
    doc["components"]["schemas"]["FieldErrors"] = json!({
        "type": "object",
        "properties": {
            "error": { "type": "string", "const": "invalid" },
            "message": { "type": "string" },
            "errors": { "type": "array", "items": { "type": "object", "properties": {
                "field": { "type": "string", "description": "e.g. bid_cpm_micros, targeting.countries, creatives[].format" },
                "problem": { "type": "string" } } } }
        }
    });
}
