//! The JSON APIs' route tables and the OpenAPI 3 document written from them. Each area declares
//! its routes once with `api_routes!` — the handler, and every parameter and body field with the
//! type and bounds the handler enforces — which both mounts the handlers (under each of the
//! area's prefixes) and describes them, so a route cannot exist without being documented, nor be
//! documented other than it behaves. `GET /api/v1/openapi.json` serves every area's table as one
//! document; schemathesis checks the two against each other in `make test`.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

/// What a parameter or body field accepts: exactly what its handler accepts, no more, no less.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Any string.
    Text,
    /// A string with a non-blank character, at most `max` characters, no NUL (names, bodies).
    Words { max: usize },
    /// Any string without NUL, at most `max` characters.
    Plain { max: usize },
    /// A string matching this ECMA regular expression.
    Pattern(&'static str),
    /// Exactly one of these strings.
    OneOf(&'static [&'static str]),
    /// A whole number within these bounds.
    Int { min: i64, max: i64 },
    /// A calendar date, `2026-11-24`.
    Date,
}

/// A parameter (path, query, header) or a field of a JSON body.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// `null` is taken as absent.
    pub nullable: bool,
    pub description: &'static str,
}

impl Field {
    pub const fn required(name: &'static str, ty: Ty) -> Field {
        Field { name, ty, required: true, nullable: false, description: "" }
    }

    pub const fn optional(name: &'static str, ty: Ty) -> Field {
        Field { name, ty, required: false, nullable: false, description: "" }
    }

    /// Optional, and `null` means the same as leaving it out.
    pub const fn nullable(name: &'static str, ty: Ty) -> Field {
        Field { name, ty, required: false, nullable: true, description: "" }
    }

    pub const fn about(self, description: &'static str) -> Field {
        Field { description, ..self }
    }
}

/// A JSON request body: its fields, and whether fields it does not name are refused (the
/// merchants' API) or ignored (the chat API).
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub fields: &'static [Field],
    pub closed: bool,
    /// Whether a request without a body is refused (else it counts as an empty object).
    pub required: bool,
}

/// One route of an API: what mounts it and what documents it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The path's `{parameters}` that are narrower than any string.
    pub path_params: &'static [Field],
    pub query: &'static [Field],
    pub body: Option<Body>,
    /// Whether the route requires an `Idempotency-Key`.
    pub keyed: bool,
    /// Whether the route needs no bearer token.
    pub public: bool,
    /// The success status, and the schema (in the area's components) of its body; `None`: no body.
    pub status: u16,
    pub answer: Option<&'static str>,
}

impl Route {
    /// The defaults a table's entries fill in.
    pub const DEFAULT: Route = Route {
        method: "get",
        path: "",
        summary: "",
        path_params: &[],
        query: &[],
        body: None,
        keyed: false,
        public: false,
        status: 200,
        answer: None,
    };
}

/// An area's API: its routes, the prefixes they are mounted under, its schemas and its errors.
pub struct Table {
    pub prefixes: &'static [&'static str],
    pub routes: &'static [Route],
    /// `components.schemas` of the area's objects, its error among them.
    pub schemas: fn() -> Value,
    /// The schema every error answer of the area has.
    pub error: &'static str,
    /// A 404 (no such route) or 405 (no such method here) in the area's error shape.
    pub refuse: fn(StatusCode) -> HttpResponse,
    /// Headers every answer carries (name, description).
    pub headers: &'static [(&'static str, &'static str)],
}

/// Declares an area's API routes: `mount(scope)` registers them on the `/api/v1` scope under
/// each prefix, and `ROUTES` describes them for the OpenAPI document. Each entry sets the fields
/// of a `Route` that differ from `Route::DEFAULT`.
#[macro_export]
macro_rules! api_routes {
    (prefixes: [$($prefix:literal),+ $(,)?]; $( $method:ident $path:literal => $handler:path { $($field:ident : $value:expr),* $(,)? } )*) => {
        /// Mounts every route of the table on the `/api/v1` scope, under each prefix.
        pub fn mount(scope: actix_web::Scope) -> actix_web::Scope {
            let mut scope = scope;
            for prefix in PREFIXES {
                scope = scope $( .route(&format!("{prefix}{}", $path), actix_web::web::$method().to($handler)) )*;
            }
            scope
        }

        pub const PREFIXES: &[&str] = &[$($prefix),+];

        pub const ROUTES: &[$crate::web::openapi::Route] = &[
            $( $crate::web::openapi::Route { method: stringify!($method), path: $path, $($field: $value,)* ..$crate::web::openapi::Route::DEFAULT } ),*
        ];
    };
}

/// Every area's table, registered as app data for the document and the fallback.
pub struct ApiTables(pub Vec<&'static Table>);

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

/// The characters Rust's `str::trim` removes (Unicode White_Space), as a regex class body.
const WHITE_SPACE: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

fn schema_of(ty: Ty) -> Value {
    match ty {
        Ty::Text => json!({ "type": "string" }),
        Ty::Words { max } => json!({
            "type": "string",
            "maxLength": max,
            "pattern": format!("^[^\\u0000]*[^\\u0000{WHITE_SPACE}][^\\u0000]*$"),
        }),
        Ty::Plain { max } => json!({ "type": "string", "maxLength": max, "pattern": "^[^\\u0000]*$" }),
        Ty::Pattern(pattern) => json!({ "type": "string", "pattern": pattern }),
        Ty::OneOf(values) => json!({ "type": "string", "enum": values }),
        Ty::Int { min, max } => json!({ "type": "integer", "format": "int64", "minimum": min, "maximum": max }),
        Ty::Date => json!({ "type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" }),
    }
}

fn field_schema(field: &Field) -> Value {
    let mut schema = schema_of(field.ty);
    if field.nullable {
        schema["nullable"] = json!(true);
    }
    if !field.description.is_empty() {
        schema["description"] = json!(field.description);
    }
    schema
}

fn parameter(field: &Field, place: &str) -> Value {
    let mut p = json!({ "name": field.name, "in": place, "required": field.required || place == "path", "schema": field_schema(field) });
    if !field.description.is_empty() {
        p["description"] = json!(field.description);
    }
    p
}

fn operation(table: &Table, prefix: &str, route: &Route) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| {
            let typed = route.path_params.iter().find(|f| f.name == name).copied().unwrap_or(Field::required(name, Ty::Text));
            parameter(&typed, "path")
        })
        .collect();
    parameters.extend(route.query.iter().map(|f| parameter(f, "query")));
    if route.keyed {
        parameters.push(parameter(
            &Field::required("Idempotency-Key", Ty::Pattern("^[\\x20-\\x7e]{1,255}$"))
                .about("1 to 255 printable ASCII characters; the same request again with the same key gets the same answer"),
            "header",
        ));
    }
    let headers: Map<String, Value> =
        table.headers.iter().map(|(name, about)| (name.to_string(), json!({ "description": about, "schema": { "type": "integer" } }))).collect();
    let error = json!({ "description": "An error", "headers": headers, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{}", table.error) } } } });
    let success = match route.answer {
        Some(schema) => json!({ "description": "Success", "headers": headers, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
        None => json!({ "description": "Done; no body" }),
    };
    let mut responses = Map::new();
    responses.insert(route.status.to_string(), success);
    responses.insert("default".into(), error);
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{}{}{}", route.method, prefix, route.path).replace(['/', '{', '}'], "_"),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = route.body {
        let properties: Map<String, Value> = body.fields.iter().map(|f| (f.name.to_string(), field_schema(f))).collect();
        let required: Vec<&str> = body.fields.iter().filter(|f| f.required).map(|f| f.name).collect();
        let mut schema = json!({ "type": "object", "properties": properties });
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        if body.closed {
            schema["additionalProperties"] = json!(false);
        }
        op["requestBody"] = json!({ "required": body.required, "content": { "application/json": { "schema": schema } } });
    }
    if route.public {
        op["security"] = json!([]);
    }
    op
}

pub fn spec(tables: &[&Table]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for table in tables {
        if let Value::Object(own) = (table.schemas)() {
            schemas.extend(own);
        }
        for prefix in table.prefixes {
            for route in table.routes {
                let entry = paths.entry(format!("/api/v1{prefix}{}", route.path)).or_insert_with(|| json!({}));
                entry[route.method] = operation(table, prefix, route);
            }
        }
    }
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({ "get": {
            "summary": SELF.summary,
            "operationId": "get_openapi_json",
            "security": [],
            "responses": { "200": { "description": "This document", "content": { "application/json": { "schema": { "type": "object" } } } } },
        } }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Agora API",
            "version": "1",
            "description": "The merchants' API (Stripe's shapes: list and error objects, prefixed ids, Idempotency-Key) and the chat API (the public challenge's shapes: bare arrays, {\"error\"} and {\"errors\"} bodies). Money is in minor units; times are Unix seconds.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": schemas,
        }
    })
}

pub async fn document(tables: web::Data<ApiTables>) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-cache")).json(spec(&tables.0))
}

/// Whether a concrete path (below `/api/v1`) fits a route's template.
fn fits(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(seg), Some(got)) if (seg.starts_with('{') && !got.is_empty()) || seg == got => {}
            _ => return false,
        }
    }
}

/// What `/api/v1` answers when no route took the request: 405 with `Allow` when the path exists
/// for other methods, else 404 — in the error shape of the area the path belongs to.
pub async fn unrouted(req: HttpRequest, tables: web::Data<ApiTables>) -> HttpResponse {
    // As sent: `/customers/` is not `/customers` (the router does not serve it), so it is 404.
    let path = req.path().strip_prefix("/api/v1").unwrap_or(req.path());
    let mut allowed: Vec<&str> = if path == "/openapi.json" { vec!["get"] } else { Vec::new() };
    let mut owner: Option<&Table> = None;
    for table in &tables.0 {
        for prefix in table.prefixes {
            for route in table.routes {
                if fits(&format!("{prefix}{}", route.path), path) {
                    allowed.push(route.method);
                    owner = Some(table);
                }
            }
        }
        if owner.is_none() && table.prefixes.iter().any(|p| !p.is_empty() && path.starts_with(p)) {
            owner = Some(table);
        }
    }
    let owner = owner.or(tables.0.first().copied());
    if allowed.is_empty() || *req.method() == Method::OPTIONS {
        return owner.map_or_else(|| HttpResponse::NotFound().finish(), |t| (t.refuse)(StatusCode::NOT_FOUND));
    }
    let mut methods: Vec<String> = allowed.iter().map(|m| m.to_ascii_uppercase()).collect();
    methods.sort();
    methods.dedup();
    let mut response = owner.map_or_else(|| HttpResponse::MethodNotAllowed().finish(), |t| (t.refuse)(StatusCode::METHOD_NOT_ALLOWED));
    if let Ok(value) = header::HeaderValue::from_str(&methods.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The document itself, outside any area's table.
pub const SELF: Route = Route { summary: "This API's OpenAPI 3 document", public: true, ..Route::DEFAULT };

/// Every (method, full path, route) the tables mount, for tests that walk them.
pub fn all_routes(tables: &[&Table]) -> Vec<(String, String, &'static Route)> {
    tables
        .iter()
        .flat_map(|t| t.prefixes.iter().flat_map(move |prefix| t.routes.iter().map(move |r| (r.method.to_string(), format!("{prefix}{}", r.path), r))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_fits_paths_with_any_segment_in_its_parameters() {
        assert!(fits("/customers/{id}/balance", "/customers/cus_1/balance"));
        assert!(!fits("/customers/{id}/balance", "/customers//balance"));
        assert!(!fits("/customers/{id}", "/customers/cus_1/balance"));
        assert!(fits("/payments", "/payments"));
        assert!(!fits("/payments", "/payments/"), "a trailing slash is another path");
    }

    #[test]
    fn a_words_field_accepts_what_trim_keeps_and_nothing_blank() {
        let pattern = schema_of(Ty::Words { max: 5 })["pattern"].as_str().unwrap().to_string();
        assert!(pattern.contains("\\u3000") && pattern.starts_with("^[^\\u0000]*"), "{pattern}");
    }
}
