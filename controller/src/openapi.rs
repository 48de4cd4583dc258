//! `/openapi.json`: the admin API's `OpenAPI` 3.1 description, made from
//! the code: the schemas are derived from the request and response types
//! (utoipa), the paths from the same kind table the router is built from
//! ([`Kind::ALL`]), so the description cannot drift from what is served.
use serde_json::{Value, json};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    api::{
        AuditParams, CreatedClient, Maintenance, NewSecret, Problem, SecretInfo, SecretParams,
        Status,
        oauth::{TokenError, TokenResponse},
    },
    model::{
        ApiClient, AppProfile, BypassList, Edge, ForwardingProfile, Gateway, Group, Identity, Kind,
        Tenant, User,
    },
    nodes::{EnrolRequest, Enrolled, EnrolmentParams, EnrolmentToken, NodeStatus},
    store::{AuditEntry, Record},
};

fn schema<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).expect("schemas serialise")
}

fn spec_schema(kind: Kind) -> Value {
    match kind {
        Kind::Tenant => schema::<Tenant>(),
        Kind::Edge => schema::<Edge>(),
        Kind::Gateway => schema::<Gateway>(),
        Kind::AppProfile => schema::<AppProfile>(),
        Kind::ForwardingProfile => schema::<ForwardingProfile>(),
        Kind::BypassList => schema::<BypassList>(),
        Kind::Group => schema::<Group>(),
        Kind::User => schema::<User>(),
        Kind::Identity => schema::<Identity>(),
        Kind::ApiClient => schema::<ApiClient>(),
    }
}

fn type_name(kind: Kind) -> String {
    kind.as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn problem(desc: &str) -> Value {
    json!({
        "description": desc,
        "content": { "application/problem+json": { "schema": r("Problem") } }
    })
}

fn ok_json(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

fn errors(write: bool) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("400".into(), problem("Malformed request"));
    m.insert("401".into(), problem("No valid access token"));
    m.insert("403".into(), problem("The token's scope does not allow it"));
    m.insert("429".into(), problem("Rate limited (see Retry-After)"));
    if write {
        m.insert("404".into(), problem("No such object"));
        m.insert("409".into(), problem("The name is taken"));
        m.insert("412".into(), problem("If-Match names an older version"));
        m.insert("413".into(), problem("Body too large"));
        m.insert("415".into(), problem("Wrong content type"));
        m.insert(
            "422".into(),
            problem("A field or the resulting policy is invalid"),
        );
        m.insert(
            "503".into(),
            problem("Read-only maintenance (see Retry-After)"),
        );
    }
    m
}

fn with(mut m: serde_json::Map<String, Value>, code: &str, v: Value) -> Value {
    m.insert(code.into(), v);
    Value::Object(m)
}

fn param(name: &str, inn: &str, desc: &str, schema: Value, required: bool) -> Value {
    json!({ "name": name, "in": inn, "description": desc, "required": required, "schema": schema })
}

fn list_params() -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            "Page size (default 50, at most 5,000)",
            json!({"type": "integer", "minimum": 1, "maximum": 5000}),
            false,
        ),
        param(
            "after",
            "query",
            "The previous page's `next`",
            json!({"type": "string"}),
            false,
        ),
        param(
            "name",
            "query",
            "Exactly this name",
            json!({"type": "string"}),
            false,
        ),
        param(
            "name_contains",
            "query",
            "Names containing this, case-insensitively",
            json!({"type": "string"}),
            false,
        ),
    ]
}

fn id_param() -> Value {
    param(
        "id",
        "path",
        "The object's id",
        json!({"type": "string"}),
        true,
    )
}

fn if_match() -> Value {
    param(
        "If-Match",
        "header",
        "The ETag read (\"3\"): the write fails with 412 if the object changed since",
        json!({"type": "string"}),
        false,
    )
}

/// The document.
pub fn document() -> Value {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for kind in Kind::ALL {
        let t = type_name(kind);
        schemas.insert(t.clone(), spec_schema(kind));
        // What the API returns: the object and its metadata.
        schemas.insert(
            format!("{t}Record"),
            json!({ "allOf": [ r("RecordMeta"), r(&t) ] }),
        );
        schemas.insert(
            format!("{t}Page"),
            json!({
                "type": "object",
                "required": ["items"],
                "properties": {
                    "items": { "type": "array", "items": r(&format!("{t}Record")) },
                    "next": { "type": "string", "description": "Pass as `after` for the next page" }
                }
            }),
        );
        let path = kind.path();
        let tag = kind.as_str();
        let created = if kind == Kind::ApiClient {
            ok_json(
                "Created, with its first secret (shown once)",
                r("CreatedClient"),
            )
        } else {
            ok_json("Created", r(&format!("{t}Record")))
        };
        let mut post_params = Vec::new();
        if kind == Kind::ApiClient {
            post_params.push(param(
                "expires_in_days",
                "query",
                "The first secret's lifetime in days (1 to 730, default 90)",
                json!({"type": "integer", "minimum": 1, "maximum": 730}),
                false,
            ));
        }
        paths.insert(
            format!("/api/v1/{path}"),
            json!({
                "get": {
                    "operationId": format!("list_{tag}"),
                    "tags": [tag],
                    "summary": format!("List {path}, by name"),
                    "security": [{"bearer": ["read"]}],
                    "parameters": list_params(),
                    "responses": with(errors(false), "200", ok_json("A page", r(&format!("{t}Page"))))
                },
                "post": {
                    "operationId": format!("create_{tag}"),
                    "tags": [tag],
                    "summary": format!("Create a {}", tag.replace('_', " ")),
                    "security": [{"bearer": [kind.write_scope().as_str()]}],
                    "parameters": post_params,
                    "requestBody": { "required": true, "content": { "application/json": { "schema": r(&t) } } },
                    "responses": with(errors(true), "201", created)
                }
            }),
        );
        let etag_header =
            json!({ "ETag": { "description": "The version", "schema": {"type": "string"} } });
        let mut one = ok_json("The object", r(&format!("{t}Record")));
        one["headers"] = etag_header.clone();
        let mut get_responses = errors(false);
        get_responses.insert("404".into(), problem("No such object"));
        get_responses.insert("200".into(), one.clone());
        paths.insert(
            format!("/api/v1/{path}/{{id}}"),
            json!({
                "parameters": [id_param()],
                "get": {
                    "operationId": format!("get_{tag}"),
                    "tags": [tag],
                    "security": [{"bearer": ["read"]}],
                    "responses": get_responses
                },
                "put": {
                    "operationId": format!("replace_{tag}"),
                    "tags": [tag],
                    "summary": "Replace the object (send every field)",
                    "security": [{"bearer": [kind.write_scope().as_str()]}],
                    "parameters": [if_match()],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": r(&t) } } },
                    "responses": with(errors(true), "200", one.clone())
                },
                "patch": {
                    "operationId": format!("patch_{tag}"),
                    "tags": [tag],
                    "summary": "Change some fields (RFC 7396 JSON merge patch; null removes a field)",
                    "security": [{"bearer": [kind.write_scope().as_str()]}],
                    "parameters": [if_match()],
                    "requestBody": { "required": true, "content": {
                        "application/merge-patch+json": { "schema": {"type": "object"} },
                        "application/json": { "schema": {"type": "object"} }
                    } },
                    "responses": with(errors(true), "200", one)
                },
                "delete": {
                    "operationId": format!("delete_{tag}"),
                    "tags": [tag],
                    "security": [{"bearer": [kind.write_scope().as_str()]}],
                    "parameters": [if_match()],
                    "responses": with(errors(true), "204", json!({"description": "Deleted"}))
                }
            }),
        );
    }
    paths.insert(
        "/api/v1/api-clients/{id}/secrets".into(),
        json!({
            "parameters": [id_param()],
            "get": {
                "operationId": "list_secrets",
                "tags": ["api_client"],
                "summary": "The client's secrets (ids and expiries; never the secrets)",
                "security": [{"bearer": ["read"]}],
                "responses": with(errors(false), "200", ok_json("The secrets", json!({
                    "type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": r("SecretInfo")}}
                })))
            },
            "post": {
                "operationId": "add_secret",
                "tags": ["api_client"],
                "summary": "A new secret (shown once); the client's live tokens stop working",
                "security": [{"bearer": ["admin"]}],
                "requestBody": { "required": false, "content": { "application/json": { "schema": r("SecretParams") } } },
                "responses": with(errors(true), "201", ok_json("The secret", r("NewSecret")))
            }
        }),
    );
    paths.insert(
        "/api/v1/api-clients/{id}/secrets/{secret_id}".into(),
        json!({
            "parameters": [id_param(), param("secret_id", "path", "The secret's id", json!({"type": "string"}), true)],
            "delete": {
                "operationId": "remove_secret",
                "tags": ["api_client"],
                "summary": "Remove a secret; the client's live tokens stop working",
                "security": [{"bearer": ["admin"]}],
                "responses": with(errors(true), "204", json!({"description": "Removed"}))
            }
        }),
    );
    paths.insert(
        "/api/v1/maintenance".into(),
        json!({
            "get": {
                "operationId": "get_maintenance",
                "tags": ["maintenance"],
                "security": [{"bearer": ["read"]}],
                "responses": with(errors(false), "200", ok_json("The mode", r("Maintenance")))
            },
            "put": {
                "operationId": "set_maintenance",
                "tags": ["maintenance"],
                "summary": "Switch read-only maintenance on or off",
                "security": [{"bearer": ["admin"]}],
                "requestBody": { "required": true, "content": { "application/json": { "schema": r("Maintenance") } } },
                "responses": with(errors(true), "200", ok_json("The mode", r("Maintenance")))
            }
        }),
    );
    let audit_params: Vec<Value> = [
        (
            "limit",
            "Page size (default 50, at most 5,000)",
            json!({"type": "integer", "minimum": 1, "maximum": 5000}),
        ),
        (
            "before",
            "The previous page's `next`",
            json!({"type": "integer"}),
        ),
        (
            "actor",
            "Who (client:ID, local:USER, ...)",
            json!({"type": "string"}),
        ),
        ("kind", "The object's kind", json!({"type": "string"})),
        ("object_id", "The object's id", json!({"type": "string"})),
        (
            "action",
            "create, update, delete, add_secret, ...",
            json!({"type": "string"}),
        ),
        (
            "since",
            "At or after (RFC 3339)",
            json!({"type": "string", "format": "date-time"}),
        ),
        (
            "until",
            "Before (RFC 3339)",
            json!({"type": "string", "format": "date-time"}),
        ),
    ]
    .into_iter()
    .map(|(n, d, s)| param(n, "query", d, s, false))
    .collect();
    paths.insert(
        "/api/v1/audit".into(),
        json!({
            "get": {
                "operationId": "audit",
                "tags": ["audit"],
                "summary": "The audit log, newest first (read-only: nothing writes it through the API)",
                "security": [{"bearer": ["read"]}],
                "parameters": audit_params,
                "responses": with(errors(false), "200", ok_json("A page", json!({
                    "type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": r("AuditEntry")}, "next": {"type": "string"}}
                })))
            }
        }),
    );
    paths.insert(
        "/api/v1/status".into(),
        json!({
            "get": {
                "operationId": "status",
                "tags": ["status"],
                "security": [{"bearer": ["read"]}],
                "responses": with(errors(false), "200", ok_json("The controller's state", r("Status")))
            }
        }),
    );
    paths.insert(
        "/api/v1/directory".into(),
        json!({
            "get": {
                "operationId": "directory_status",
                "tags": ["directory"],
                "summary": "Directory group sync: the last result and the next sync time",
                "security": [{"bearer": ["read"]}],
                "responses": with(errors(false), "200", ok_json("The sync's status", r("SyncStatus")))
            }
        }),
    );
    paths.insert(
        "/api/v1/directory/sync".into(),
        json!({
            "post": {
                "operationId": "directory_sync",
                "tags": ["directory"],
                "summary": "Sync the groups now (the status shows when it ran and what it did)",
                "security": [{"bearer": ["policy"]}],
                "parameters": [param("force", "query", "Take it even if it removes more than half of the directory's groups and users", json!({"type": "boolean"}), false)],
                "responses": with(errors(true), "202", ok_json("Asked for", r("SyncStatus")))
            }
        }),
    );
    for coll in ["gateways", "edges"] {
        paths.insert(
            format!("/api/v1/{coll}/{{id}}/enrolment"),
            json!({
                "parameters": [id_param()],
                "post": {
                    "operationId": format!("enrolment_token_{coll}"),
                    "tags": ["enrolment"],
                    "summary": "A one-time enrolment token (shown once)",
                    "security": [{"bearer": ["admin"]}],
                    "requestBody": { "required": false, "content": { "application/json": { "schema": r("EnrolmentParams") } } },
                    "responses": with(errors(true), "201", ok_json("The token", r("EnrolmentToken")))
                }
            }),
        );
        paths.insert(
            format!("/api/v1/{coll}/{{id}}/revoke"),
            json!({
                "parameters": [id_param()],
                "post": {
                    "operationId": format!("revoke_{coll}"),
                    "tags": ["enrolment"],
                    "summary": "Revoke its certificates and withdraw its unused tokens: refused at once",
                    "security": [{"bearer": ["admin"]}],
                    "responses": with(errors(true), "200", ok_json("Revoked", json!({"type": "object"})))
                }
            }),
        );
    }
    paths.insert(
        "/enrol".into(),
        json!({
            "post": {
                "operationId": "enrol",
                "tags": ["enrolment"],
                "summary": "A gateway or edge enrols: a one-time token and its certificate signing request",
                "security": [{}],
                "requestBody": { "required": true, "content": { "application/json": { "schema": r("EnrolRequest") } } },
                "responses": with(errors(false), "200", ok_json("Its certificate and the CA", r("Enrolled")))
            }
        }),
    );
    paths.insert(
        "/api/v1/nodes".into(),
        json!({
            "get": {
                "operationId": "nodes",
                "tags": ["status"],
                "summary": "Every gateway and edge: last contact, applied revision, version, tunnels, alerts",
                "security": [{"bearer": ["read"]}],
                "responses": with(errors(false), "200", ok_json("The nodes", json!({
                    "type": "object", "required": ["revision", "items"],
                    "properties": {"revision": {"type": "integer"}, "items": {"type": "array", "items": r("NodeStatus")}}
                })))
            }
        }),
    );
    paths.insert(
        "/oauth/token".into(),
        json!({
            "post": {
                "operationId": "token",
                "tags": ["oauth"],
                "summary": "OAuth 2.0 client credentials grant (client_secret_basic or client_secret_post)",
                "security": [{}, {"basic": []}],
                "requestBody": { "required": true, "content": { "application/x-www-form-urlencoded": { "schema": {
                    "type": "object", "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"}
                    }
                } } } },
                "responses": {
                    "200": ok_json("An access token (RFC 9068 JWT)", r("TokenResponse")),
                    "400": ok_json("An RFC 6749 §5.2 error", r("TokenError")),
                    "401": ok_json("Client authentication failed", r("TokenError")),
                    "429": ok_json("Too many attempts (see Retry-After)", r("TokenError"))
                }
            }
        }),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({
            "get": {
                "operationId": "openapi",
                "tags": ["meta"],
                "security": [{}],
                "responses": { "200": { "description": "This document", "content": { "application/json": {} } } }
            }
        }),
    );
    schemas.insert(
        "RecordMeta".into(),
        json!({
            "type": "object",
            "required": ["id", "version", "created_at", "updated_at", "revision"],
            "properties": {
                "id": {"type": "string"},
                "version": {"type": "integer", "description": "The ETag"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "revision": {"type": "integer", "description": "The policy revision of its last change"},
                "generation": {"type": "integer", "description": "API clients: moves on with every change (live tokens stop working)"}
            }
        }),
    );
    for (name, s) in [
        (Problem::name(), schema::<Problem>()),
        (AuditEntry::name(), schema::<AuditEntry>()),
        (Maintenance::name(), schema::<Maintenance>()),
        (NewSecret::name(), schema::<NewSecret>()),
        (SecretInfo::name(), schema::<SecretInfo>()),
        (SecretParams::name(), schema::<SecretParams>()),
        (Status::name(), schema::<Status>()),
        (TokenResponse::name(), schema::<TokenResponse>()),
        (TokenError::name(), schema::<TokenError>()),
        (AuditParams::name(), schema::<AuditParams>()),
        (EnrolmentParams::name(), schema::<EnrolmentParams>()),
        (EnrolmentToken::name(), schema::<EnrolmentToken>()),
        (EnrolRequest::name(), schema::<EnrolRequest>()),
        (Enrolled::name(), schema::<Enrolled>()),
        (NodeStatus::name(), schema::<NodeStatus>()),
        (
            crate::directory::SyncStatus::name(),
            schema::<crate::directory::SyncStatus>(),
        ),
    ] {
        schemas.insert(name.into_owned(), s);
    }
    schemas.insert(
        "CreatedClient".into(),
        json!({
            "allOf": [ r("ApiClientRecord"), {
                "type": "object", "required": ["client_secret"],
                "properties": {"client_secret": r("NewSecret")}
            } ]
        }),
    );
    let _ = (schema::<Record>(), schema::<CreatedClient>());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sluice controller admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The organisation's objects, API clients, the audit log and maintenance mode. Authenticate with an access token from POST /oauth/token (OAuth 2.0 client credentials). Errors are RFC 9457 problem details.",
            "license": { "name": "MIT", "identifier": "MIT" }
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "basic": { "type": "http", "scheme": "basic" }
            }
        }
    })
}
