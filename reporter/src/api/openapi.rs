//! The OpenAPI 3.1 document of `/api/v1`, written by hand next to the routes it describes (a
//! test checks that every route in [`super::routes::ROUTES`] is in it).

use serde_json::{Value, json};

fn range_params() -> Value {
    json!([
        { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0 },
          "description": "Start, Unix seconds (inclusive). Default: `to` minus a route-specific span." },
        { "name": "to", "in": "query", "schema": { "type": "integer" },
          "description": "End, Unix seconds (exclusive). Default: now. At most 400 days after `from`." }
    ])
}

fn with(mut base: Value, more: Value) -> Value {
    if let (Some(a), Some(b)) = (base.as_array_mut(), more.as_array()) {
        a.extend(b.iter().cloned());
    }
    base
}

fn id_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "integer" } })
}

fn ok(schema: &str, description: &str) -> Value {
    json!({
        "200": { "description": description,
                 "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
        "400": { "$ref": "#/components/responses/BadRequest" },
        "401": { "$ref": "#/components/responses/Unauthorized" },
        "403": { "$ref": "#/components/responses/Forbidden" },
        "404": { "$ref": "#/components/responses/NotFound" }
    })
}

pub fn document() -> Value {
    let figures = json!({
        "type": "object",
        "description": "Counters and derived figures. Money is integer micros of the campaign's currency.",
        "properties": {
            "bids": { "type": "integer" }, "nobids": { "type": "integer" },
            "wins": { "type": "integer" }, "losses": { "type": "integer" },
            "impressions": { "type": "integer", "description": "billing notices" },
            "clicks": { "type": "integer" },
            "spend_micros": { "type": "integer", "description": "sum of clearing CPM / 1000" },
            "win_rate": { "type": ["number", "null"], "description": "wins / bids" },
            "ecpm_micros": { "type": ["integer", "null"], "description": "spend CPM per impression" },
            "ctr": { "type": ["number", "null"], "description": "clicks / impressions" },
            "avg_bid_cpm_micros": { "type": ["integer", "null"] }
        }
    });
    let error = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Helios reporter API",
            "version": "1",
            "description": "Reporting for advertisers and operators. Authenticate with `Authorization: Bearer <JWT>` (HS256; claims `role` = advertiser|operator, `adv` = advertiser id, `exp`, `iat`). An advertiser token sees only its own advertiser; an operator token sees all. Times are Unix seconds (UTC); money is integer micros."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/v1/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1 document" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics: ingest counters, consumer lag, spend and budget per campaign (unauthenticated; keep it off the public gateway)", "security": [],
                "responses": { "200": { "description": "Prometheus text format" } } } },
            "/healthz": { "get": { "summary": "Liveness and database reachability", "security": [],
                "responses": { "200": { "description": "ok" }, "503": { "description": "database unreachable" } } } },
            "/api/v1/me": { "get": { "summary": "The caller's token claims",
                "responses": ok("Me", "claims") } },
            "/api/v1/advertisers": { "get": { "summary": "Advertisers visible to the caller (an advertiser sees itself)",
                "responses": ok("AdvertiserList", "advertisers") } },
            "/api/v1/advertisers/{advertiser_id}": { "get": { "summary": "One advertiser (403 for another advertiser's id)",
                "parameters": [id_param("advertiser_id")], "responses": ok("Advertiser", "advertiser") } },
            "/api/v1/campaigns": { "get": { "summary": "Campaigns with status and figures over the range (default: last 7 days)",
                "parameters": with(range_params(), json!([{ "name": "advertiser_id", "in": "query", "schema": { "type": "integer" },
                    "description": "Operators: filter; advertisers: must be their own (403 otherwise)" }])),
                "responses": ok("CampaignList", "campaigns") } },
            "/api/v1/campaigns/{campaign_id}": { "get": { "summary": "One campaign with figures over the range",
                "parameters": with(json!([id_param("campaign_id")]), range_params()),
                "responses": ok("CampaignOne", "campaign") } },
            "/api/v1/campaigns/{campaign_id}/pacing": { "get": { "summary": "Cumulative spend against the target (budget spread evenly over the flight)",
                "parameters": [id_param("campaign_id")], "responses": ok("Pacing", "pacing curve") } },
            "/api/v1/stats": { "get": { "summary": "Time series from the rollups",
                "parameters": with(range_params(), json!([
                    { "name": "granularity", "in": "query", "schema": { "enum": ["minute", "hour", "day"] },
                      "description": "Default: minute up to 6 h, hour up to 31 days, day beyond. At most 5000 buckets. Per-minute figures exist for campaign totals only: with group_by creative, site, country or device, minute is refused (400) and the default is at least hour." },
                    { "name": "group_by", "in": "query", "schema": { "enum": ["none", "advertiser", "campaign", "creative", "site", "country", "device"] },
                      "description": "One series per group (top `limit` by impressions). `advertiser` is for operators." },
                    { "name": "advertiser_id", "in": "query", "schema": { "type": "integer" } },
                    { "name": "campaign_id", "in": "query", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 50, "default": 10 } }
                ])),
                "responses": ok("Stats", "series") } },
            "/api/v1/top-sites": { "get": { "summary": "Sites and apps by impressions",
                "parameters": with(range_params(), json!([
                    { "name": "advertiser_id", "in": "query", "schema": { "type": "integer" } },
                    { "name": "campaign_id", "in": "query", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 10 } }
                ])),
                "responses": ok("TopSites", "sites") } },
            "/api/v1/nobid-reasons": { "get": { "summary": "No-bids by reason and exchange (operators only)",
                "parameters": with(range_params(), json!([{ "name": "exchange", "in": "query", "schema": { "type": "string" } }])),
                "responses": ok("NobidReasons", "reasons") } },
            "/api/v1/ingest": { "get": { "summary": "Ingest counters (operators only)",
                "responses": ok("Ingest", "counters") } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "responses": {
                "BadRequest": error("parameter invalid or range too large"),
                "Unauthorized": error("token missing, malformed, expired or badly signed"),
                "Forbidden": error("token valid but not allowed to read this"),
                "NotFound": error("no such campaign, advertiser or route")
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "message"], "properties": {
                    "error": { "enum": ["unauthorized", "forbidden", "bad_request", "not_found", "unavailable"] },
                    "message": { "type": "string" } } },
                "Figures": figures,
                "Me": { "type": "object", "properties": { "sub": { "type": "string" }, "role": { "enum": ["advertiser", "operator"] },
                    "advertiser_id": { "type": ["integer", "null"] }, "exp": { "type": "integer" } } },
                "Advertiser": { "type": "object", "properties": { "advertiser_id": { "type": "integer" }, "name": { "type": "string" }, "campaigns": { "type": "integer" } } },
                "AdvertiserList": { "type": "object", "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Advertiser" } } } },
                "Campaign": { "type": "object", "properties": {
                    "campaign_id": { "type": "integer" }, "advertiser_id": { "type": "integer" }, "name": { "type": "string" },
                    "status": { "enum": ["active", "paused", "archived", "unknown"] }, "delivering": { "type": "boolean" },
                    "budget_micros": { "type": ["integer", "null"] }, "start_at": { "type": ["integer", "null"] },
                    "end_at": { "type": ["integer", "null"] }, "last_event_at": { "type": ["integer", "null"] },
                    "figures": { "$ref": "#/components/schemas/Figures" } } },
                "CampaignList": { "type": "object", "properties": { "from": { "type": "integer" }, "to": { "type": "integer" },
                    "items": { "type": "array", "items": { "$ref": "#/components/schemas/Campaign" } } } },
                "CampaignOne": { "type": "object", "properties": { "from": { "type": "integer" }, "to": { "type": "integer" },
                    "campaign": { "$ref": "#/components/schemas/Campaign" } } },
                "Stats": { "type": "object", "properties": {
                    "from": { "type": "integer" }, "to": { "type": "integer" }, "step": { "type": "integer" },
                    "granularity": { "enum": ["minute", "hour", "day"] }, "group_by": { "type": "string" },
                    "series": { "type": "array", "items": { "type": "object", "properties": {
                        "key": { "type": "string" }, "totals": { "$ref": "#/components/schemas/Figures" },
                        "points": { "type": "array", "items": { "allOf": [ { "$ref": "#/components/schemas/Figures" },
                            { "type": "object", "properties": { "t": { "type": "integer" } } } ] } } } } } } },
                "Pacing": { "type": "object", "properties": {
                    "campaign_id": { "type": "integer" }, "budget_micros": { "type": ["integer", "null"] },
                    "start_at": { "type": "integer" }, "end_at": { "type": ["integer", "null"] },
                    "spent_micros": { "type": "integer" }, "expected_micros": { "type": ["integer", "null"] },
                    "pace": { "type": ["number", "null"], "description": "spent / expected" },
                    "points": { "type": "array", "items": { "type": "object", "properties": {
                        "t": { "type": "integer" }, "spent_micros": { "type": "integer" }, "target_micros": { "type": ["integer", "null"] } } } } } },
                "TopSites": { "type": "object", "properties": { "items": { "type": "array", "items": { "type": "object", "properties": {
                    "site_or_app": { "type": "string" }, "figures": { "$ref": "#/components/schemas/Figures" } } } } } },
                "NobidReasons": { "type": "object", "properties": { "items": { "type": "array", "items": { "type": "object", "properties": {
                    "reason": { "type": "integer" }, "label": { "type": "string" }, "exchange": { "type": "string" }, "nobids": { "type": "integer" } } } } } },
                "Ingest": { "type": "object", "properties": {
                    "received": { "type": "integer" }, "rejected": { "type": "integer" }, "out_of_range": { "type": "integer" },
                    "inserted": { "type": "integer" }, "duplicates": { "type": "integer" }, "batches": { "type": "integer" },
                    "retries": { "type": "integer" }, "last_batch_us": { "type": "integer" } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths is an object");
        for r in super::super::routes::ROUTES {
            assert!(
                paths.contains_key(*r),
                "{r} missing from the OpenAPI document"
            );
        }
        assert_eq!(paths.len(), super::super::routes::ROUTES.len());
        // Every $ref resolves.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let path = &part[..part.find('"').unwrap_or(0)];
            let mut node = &doc["components"];
            for seg in path.split('/') {
                node = &node[seg];
            }
            assert!(!node.is_null(), "dangling $ref {path}");
        }
    }
}
