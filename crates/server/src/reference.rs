//! `GET /v1/docs`: the API reference as one HTML page, rendered on the server from the OpenAPI
//! document, with no script and nothing fetched from the network (a department's server often
//! has no way out): every operation by tag with its parameters, body and responses, then every
//! schema with its properties.

use std::fmt::Write;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;

/// The API reference: this document as an HTML page, with nothing fetched from the network.
#[utoipa::path(get, path = "/v1/docs", tag = "ops",
    responses((status = 200, description = "an HTML page", content_type = "text/html")))]
pub(crate) async fn reference() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], render(&crate::openapi::document()))
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The page for `doc`, an OpenAPI 3.1 document as JSON.
pub(crate) fn render(doc: &Value) -> String {
    let mut out = String::with_capacity(64 << 10);
    let title = doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("API");
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} API reference</title>\n<style>{STYLE}</style></head><body>\n<h1>{} API reference</h1>\n<p>{}</p>\n<p>The machine-readable document: <a href=\"/v1/openapi.json\">/v1/openapi.json</a>. \
         Operations marked 🔒 need <code>Authorization: Bearer &lt;token&gt;</code>.</p>\n",
        escape(title),
        escape(title),
        text(doc.pointer("/info/description"))
    );
    let operations = operations(doc);
    out.push_str("<nav><h2>Operations</h2>\n");
    let mut tags: Vec<&str> = operations.iter().map(|o| o.tag).collect();
    tags.dedup();
    for tag in &tags {
        let _ = writeln!(out, "<h3>{}</h3><ul>", escape(tag));
        for o in operations.iter().filter(|o| o.tag == *tag) {
            let _ = writeln!(
                out,
                "<li><a href=\"#{}\">{}</a> {}</li>",
                anchor(&o.id),
                o.signature(),
                escape(first_line(o.op))
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h3>Schemas</h3><p>");
    let schemas = doc.pointer("/components/schemas").and_then(Value::as_object);
    for name in schemas.into_iter().flat_map(|s| s.keys()) {
        let _ = write!(out, "<a href=\"#schema-{}\">{}</a> ", anchor(name), escape(name));
    }
    out.push_str("</p></nav>\n<main>\n");
    for o in &operations {
        operation(&mut out, o);
    }
    out.push_str("<h2>Schemas</h2>\n");
    for (name, schema) in schemas.into_iter().flatten() {
        schema_section(&mut out, name, schema);
    }
    out.push_str("</main></body></html>\n");
    out
}

/// One operation of the document.
struct Operation<'a> {
    tag: &'a str,
    id: String,
    method: &'static str,
    path: &'a str,
    op: &'a Value,
}

impl Operation<'_> {
    /// The method, marked, and the path.
    fn signature(&self) -> String {
        format!(
            "<span class=\"m {}\">{}</span> <code>{}</code>",
            self.method,
            self.method.to_uppercase(),
            escape(self.path)
        )
    }
}

/// Every operation, ordered by tag as they first appear, then by path.
fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let tag = op.pointer("/tags/0").and_then(Value::as_str).unwrap_or("other");
                let id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{method}{path}"), str::to_owned);
                out.push(Operation { tag, id, method, path, op });
            }
        }
    }
    let mut order: Vec<&str> = Vec::new();
    for o in &out {
        if !order.contains(&o.tag) {
            order.push(o.tag);
        }
    }
    out.sort_by_key(|o| (order.iter().position(|t| *t == o.tag), o.path, o.method));
    out
}

fn operation(out: &mut String, o: &Operation<'_>) {
    let locked = if o.op.get("security").is_some() { " 🔒" } else { "" };
    let _ = write!(
        out,
        "<section id=\"{}\"><h3>{}{locked}</h3>\n<p>{}</p>\n",
        anchor(&o.id),
        o.signature(),
        text(o.op.get("description").or_else(|| o.op.get("summary")))
    );
    if let Some(params) = o.op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
        out.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>\n");
        for p in params {
            let required = if p.get("required").and_then(Value::as_bool) == Some(true) { " (required)" } else { "" };
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(p.get("name")),
                text(p.get("in")),
                type_of(p.get("schema")),
                text(p.get("description"))
            );
        }
        out.push_str("</table>\n");
    }
    if let Some(body) = o.op.get("requestBody") {
        let _ = writeln!(out, "<h4>Request body</h4><p>{}</p><ul>", text(body.get("description")));
        for (media, content) in body.get("content").and_then(Value::as_object).into_iter().flatten() {
            let _ = writeln!(out, "<li><code>{}</code>: {}</li>", escape(media), type_of(content.get("schema")));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>\n");
    for (status, response) in o.op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let bodies: Vec<String> = response
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(media, c)| format!("<code>{}</code> {}", escape(media), type_of(c.get("schema"))))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(status),
            text(response.get("description")),
            bodies.join("<br>")
        );
    }
    out.push_str("</table></section>\n");
}

fn schema_section(out: &mut String, name: &str, schema: &Value) {
    let _ = write!(
        out,
        "<section id=\"schema-{}\"><h3>{}</h3>\n<p>{}</p>\n",
        anchor(name),
        escape(name),
        text(schema.get("description"))
    );
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        out.push_str("<table><tr><th>field</th><th>type</th><th>description</th></tr>\n");
        for (field, property) in properties {
            let mark = if required.contains(&field.as_str()) { " (required)" } else { "" };
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code>{mark}</td><td>{}</td><td>{}</td></tr>",
                escape(field),
                type_of(Some(property)),
                text(property.get("description"))
            );
        }
        out.push_str("</table>\n");
    } else {
        let _ = writeln!(out, "<p>{}</p>", type_of(Some(schema)));
    }
    out.push_str("</section>\n");
}

/// A schema's type in a few words: a link for a reference, `array of …`, the alternatives of
/// `oneOf`, enumerated values.
fn type_of(schema: Option<&Value>) -> String {
    let Some(schema) = schema else { return String::new() };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), escape(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = options.iter().map(|o| type_of(Some(o))).filter(|t| !t.is_empty()).collect();
            return parts.join(if key == "allOf" { " and " } else { " or " });
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", escape(&v.to_string()))).collect();
        return format!("one of {}", values.join(", "));
    }
    let kinds: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut words: Vec<String> = kinds
        .iter()
        .map(|kind| match *kind {
            "array" => format!("array of {}", type_of(schema.get("items"))),
            "object" => match schema.get("additionalProperties").filter(|a| a.is_object()) {
                Some(values) => format!("map of {}", type_of(Some(values))),
                None => "object".to_owned(),
            },
            other => escape(other),
        })
        .collect();
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        words.push(format!("({})", escape(format)));
    }
    words.join(" or ")
}

/// A JSON string as HTML text, `code` spans for its backticks and paragraphs for its blank lines.
fn text(value: Option<&Value>) -> String {
    let Some(s) = value.and_then(Value::as_str) else { return String::new() };
    let mut out = String::with_capacity(s.len());
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(&part.replace("\n\n", "</p><p>"));
        }
    }
    out
}

fn first_line(op: &Value) -> &str {
    op.get("summary")
        .or_else(|| op.get("description"))
        .and_then(Value::as_str)
        .and_then(|s| s.lines().next())
        .unwrap_or("")
}

/// An id for HTML anchors: letters, digits, `-` and `_` kept, anything else `-`.
fn anchor(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect()
}

/// HTML-escapes text (the five characters HTML gives meaning to; written here, as the one
/// function needs no template engine).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}\
code{font:13px ui-monospace,monospace;background:#f3f3f3;padding:0 .2em}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}\
section{border-top:1px solid #ccc;margin-top:1.5rem}.m{font:bold 12px monospace;padding:.1rem .4rem;border-radius:3px;color:#fff;background:#555}\
.get{background:#2a7}.post{background:#27c}.delete{background:#c33}.put,.patch{background:#c80}nav ul{margin:.2rem 0}";

#[cfg(test)]
mod tests {
    use super::{escape, render, text, type_of};
    use serde_json::json;

    #[test]
    fn text_is_escaped_and_code_is_marked() {
        assert_eq!(escape("<a href='x'>&\""), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
        assert_eq!(text(Some(&json!("use `k` <here>"))), "use <code>k</code> &lt;here&gt;");
    }

    #[test]
    fn types_name_references_arrays_and_alternatives() {
        assert_eq!(type_of(Some(&json!({"$ref": "#/components/schemas/Foo"}))), "<a href=\"#schema-Foo\">Foo</a>");
        assert_eq!(type_of(Some(&json!({"type": "array", "items": {"type": "string"}}))), "array of string");
        assert_eq!(type_of(Some(&json!({"type": ["string", "null"]}))), "string or null");
    }

    #[test]
    fn every_operation_and_schema_of_the_document_is_on_the_page() {
        let doc = crate::openapi::document();
        let page = render(&doc);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let shown = format!("{}</span> <code>{}</code>", method.to_uppercase(), escape(path));
                assert!(page.contains(&shown), "{method} {path} is missing");
            }
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "schema {name} is missing");
        }
        assert!(!page.contains("<script") && !page.contains("src="), "the page loads nothing");
    }
}
