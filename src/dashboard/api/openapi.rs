//! `GET /api/v1/openapi.json`: the OpenAPI 3 document, written from the same route table that
//! mounts the handlers (`api::ROUTES`), so a route cannot exist without being described.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::{respond, Route, ROUTES};

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    parameters.extend(route.query.iter().map(|name| json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" } })));
    if route.keyed {
        parameters.push(json!({ "name": "Idempotency-Key", "in": "header", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 255 } }));
    }
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}'], "_")),
        "parameters": parameters,
        "responses": {
            "default": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "2XX": { "description": "Success", "content": { "application/json": { "schema": { "type": "object" } } } },
        },
    });
    if !route.body.is_empty() {
        let properties: Map<String, Value> = route.body.iter().map(|f| (f.to_string(), json!({}))).collect();
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "properties": properties } } },
        });
    }
    if route.public {
        op["security"] = json!([]);
    }
    op
}

pub fn spec() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(format!("/api/v1{}", route.path)).or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Agora merchants' API", "version": "1" },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "type": { "type": "string" }, "code": { "type": "string" }, "message": { "type": "string" }, "param": { "type": "string", "nullable": true }
                    } } }
                }
            }
        }
    })
}

pub async fn document() -> HttpResponse {
    respond(StatusCode::OK, &spec())
}
