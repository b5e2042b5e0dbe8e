//! The JSON APIs' route tables and the OpenAPI 3 document written from them. Each area declares
//! its routes once with `api_routes!`, which both mounts the handlers and describes them, so a
//! route cannot exist without being documented; `GET /api/v1/openapi.json` serves every area's
//! table as one document.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

/// One route of an API: what mounts it and what documents it.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub query: &'static [&'static str],
    pub body: &'static [&'static str],
    /// Whether the route requires an `Idempotency-Key`.
    pub keyed: bool,
    /// Whether the route needs no bearer token.
    pub public: bool,
}

/// Declares an area's API routes: `mount(scope)` registers them on the `/api/v1` scope and
/// `ROUTES` describes them for the OpenAPI document.
#[macro_export]
macro_rules! api_routes {
    ($( $method:ident $path:literal => $handler:path { summary: $summary:literal, query: $q:expr, body: [$($b:literal),*], keyed: $keyed:literal, public: $public:literal } )*) => {
        /// Mounts every route of the table on the `/api/v1` scope.
        pub fn mount(scope: actix_web::Scope) -> actix_web::Scope {
            scope $( .route($path, actix_web::web::$method().to($handler)) )*
        }

        pub const ROUTES: &[$crate::web::openapi::Route] = &[
            $( $crate::web::openapi::Route { method: stringify!($method), path: $path, summary: $summary, query: $q, body: &[$($b),*], keyed: $keyed, public: $public } ),*
        ];
    };
}

/// Every area's route table, registered as app data for the document.
pub struct ApiTables(pub Vec<&'static [Route]>);

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

pub fn spec(tables: &[&[Route]]) -> Value {
    let mut paths = Map::new();
    for route in tables.iter().flat_map(|t| t.iter()) {
        let entry = paths.entry(format!("/api/v1{}", route.path)).or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Agora API", "version": "1" },
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

pub async fn document(tables: web::Data<ApiTables>) -> HttpResponse {
    let mut all: Vec<&[Route]> = tables.0.clone();
    all.push(SELF);
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-cache")).json(spec(&all))
}

/// The document describes itself too.
const SELF: &[Route] = &[Route {
    method: "get",
    path: "/openapi.json",
    summary: "This API's OpenAPI 3 document",
    query: &[],
    body: &[],
    keyed: false,
    public: true,
}];

/// Every route the document lists, the document's own included.
pub fn all_routes(tables: &[&'static [Route]]) -> Vec<&'static Route> {
    tables.iter().chain(std::iter::once(&SELF)).flat_map(|t| t.iter()).collect()
}
