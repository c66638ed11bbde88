//! JSON Schema: validity through the `jsonschema` crate (references served from the
//! registry, never fetched), compatibility by comparing what each schema accepts.
//!
//! A reader can read a writer's data when everything the writer accepts, the reader accepts
//! too. Objects follow Confluent's open and closed content models: an object whose
//! `additionalProperties` is `false` is closed (it refuses unknown properties), otherwise it
//! is open (an unknown property may hold anything).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::ResolvedReference;

#[derive(Debug)]
pub struct JsonSchema {
    root: Value,
}

/// Serves `$ref`s to referenced schemas by the names they were registered under.
struct ReferenceRetriever {
    by_name: Arc<BTreeMap<String, Value>>,
}

impl jsonschema::Retrieve for ReferenceRetriever {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let wanted = uri.as_str();
        self.by_name
            .iter()
            .find(|(name, _)| {
                wanted == name.as_str()
                    || wanted.ends_with(&format!("/{}", name.trim_start_matches("./")))
            })
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                format!("reference {wanted} is not among the schema's references").into()
            })
    }
}

pub fn parse(text: &str, references: &[ResolvedReference]) -> Result<JsonSchema, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !root.is_object() && !root.is_boolean() {
        return Err("a JSON Schema is an object or a boolean".to_string());
    }
    let mut by_name = BTreeMap::new();
    for r in references {
        let v: Value = serde_json::from_str(&r.schema)
            .map_err(|e| format!("reference {} is not JSON: {e}", r.name))?;
        by_name.insert(r.name.clone(), v);
    }
    jsonschema::meta::validate(&root).map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_retriever(ReferenceRetriever {
            by_name: Arc::new(by_name),
        })
        .build(&root)
        .map_err(|e| e.to_string())?;
    Ok(JsonSchema { root })
}

pub fn normalized(schema: &JsonSchema) -> String {
    schema.root.to_string()
}

pub fn read_problems(reader: &JsonSchema, writer: &JsonSchema) -> Vec<String> {
    let mut problems = Vec::new();
    let mut cx = Cx {
        reader_root: &reader.root,
        writer_root: &writer.root,
        problems: &mut problems,
        depth: 0,
    };
    cx.check(&reader.root, &writer.root, "#");
    problems
}

struct Cx<'a> {
    reader_root: &'a Value,
    writer_root: &'a Value,
    problems: &'a mut Vec<String>,
    depth: usize,
}

/// Nesting deeper than this is not compared (a recursive `$ref` would never end).
const MAX_DEPTH: usize = 32;

fn local_ref<'v>(root: &'v Value, schema: &'v Value) -> &'v Value {
    let mut current = schema;
    for _ in 0..MAX_DEPTH {
        match current.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                Some(target) => current = target,
                None => return current,
            },
            _ => return current,
        }
    }
    current
}

fn types(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn is_closed(schema: &Map<String, Value>) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

impl Cx<'_> {
    fn problem(&mut self, path: &str, what: &str) {
        self.problems.push(format!("{what} at {path}"));
    }

    fn check(&mut self, reader: &Value, writer: &Value, path: &str) {
        if self.depth > MAX_DEPTH {
            return;
        }
        let reader = local_ref(self.reader_root, reader);
        let writer = local_ref(self.writer_root, writer);
        if reader == writer {
            return;
        }
        let (r, w) = match (reader, writer) {
            (Value::Bool(true), _) | (_, Value::Bool(false)) => return,
            (Value::Object(r), _) if r.is_empty() => return,
            (Value::Bool(false), _) => return self.problem(path, "reader accepts nothing"),
            (Value::Object(r), Value::Bool(true)) => (r, &Map::new()),
            (Value::Object(r), Value::Object(w)) => (r, w),
            _ => return self.problem(path, "schema is not an object"),
        };
        // Draft references to other documents are compared by name only.
        if r.get("$ref") != w.get("$ref") {
            if let Some(rr) = r.get("$ref") {
                return self.problem(path, &format!("reference changed to {rr}"));
            }
        }
        self.check_types(r, w, path);
        self.check_enum(r, w, path);
        self.check_bounds(r, w, path);
        self.check_object(r, w, path);
        self.check_array(r, w, path);
        for combiner in ["oneOf", "anyOf", "allOf"] {
            self.check_combiner(r, w, combiner, path);
        }
    }

    fn check_types(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let Some(rt) = types(r) else { return };
        let Some(wt) = types(w) else {
            return self.problem(path, "type narrowed from any");
        };
        for t in wt {
            let covered = rt.contains(&t) || (t == "integer" && rt.contains(&"number"));
            if !covered {
                self.problem(path, &format!("type {t} no longer accepted"));
            }
        }
    }

    fn check_enum(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let Some(Value::Array(re)) = r.get("enum") else {
            return;
        };
        match w.get("enum") {
            Some(Value::Array(we)) => {
                if we.iter().any(|v| !re.contains(v)) {
                    self.problem(path, "enum values removed");
                }
            }
            _ => self.problem(path, "enum added"),
        }
        if let Some(c) = r.get("const") {
            if w.get("const") != Some(c) {
                self.problem(path, "const added or changed");
            }
        }
    }

    /// Limits may widen (a reader accepting more) but not narrow.
    fn check_bounds(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let upper = [
            "maximum",
            "exclusiveMaximum",
            "maxLength",
            "maxItems",
            "maxProperties",
        ];
        let lower = [
            "minimum",
            "exclusiveMinimum",
            "minLength",
            "minItems",
            "minProperties",
        ];
        for (keys, narrower) in [
            (&upper[..], (|r: f64, w: f64| r < w) as fn(f64, f64) -> bool),
            (&lower[..], |r: f64, w: f64| r > w),
        ] {
            for key in keys {
                let Some(rv) = r.get(*key).and_then(Value::as_f64) else {
                    continue;
                };
                match w.get(*key).and_then(Value::as_f64) {
                    Some(wv) if !narrower(rv, wv) => {}
                    Some(_) => self.problem(path, &format!("{key} narrowed")),
                    None => self.problem(path, &format!("{key} added")),
                }
            }
        }
        for key in ["pattern", "multipleOf", "format"] {
            if let Some(rv) = r.get(key) {
                if w.get(key) != Some(rv) {
                    self.problem(path, &format!("{key} added or changed"));
                }
            }
        }
    }

    fn check_object(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let empty = Map::new();
        let rp = r
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let wp = w
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let r_additional = r.get("additionalProperties");
        let w_additional = w.get("additionalProperties");
        for (name, ws) in wp {
            let sub = format!("{path}/properties/{name}");
            match (rp.get(name), r_additional) {
                (Some(rs), _) => self.nested(rs, ws, &sub),
                (None, Some(Value::Bool(false))) => {
                    self.problem(&sub, "property removed from a closed content model")
                }
                (None, Some(ra @ Value::Object(_))) => self.nested(ra, ws, &sub),
                (None, _) => {}
            }
        }
        for (name, rs) in rp {
            if wp.contains_key(name) {
                continue;
            }
            let sub = format!("{path}/properties/{name}");
            match w_additional {
                Some(Value::Bool(false)) => {}
                Some(wa @ Value::Object(_)) => self.nested(rs, wa, &sub),
                _ => {
                    let accepts_anything =
                        rs == &Value::Bool(true) || rs.as_object().is_some_and(|o| o.is_empty());
                    if !accepts_anything {
                        self.problem(&sub, "property added to an open content model");
                    }
                }
            }
        }
        if is_closed(r) && !is_closed(w) && w.get("type").is_some_and(|t| t == "object") {
            self.problem(path, "additionalProperties narrowed to false");
        }
        if let (Some(ra @ Value::Object(_)), Some(wa @ Value::Object(_))) =
            (r_additional, w_additional)
        {
            self.nested(ra, wa, &format!("{path}/additionalProperties"));
        }
        if let Some(Value::Array(rr)) = r.get("required") {
            let wr = w.get("required").and_then(Value::as_array);
            for name in rr {
                if !wr.is_some_and(|wr| wr.contains(name)) {
                    self.problem(path, &format!("required property {name} added"));
                }
            }
        }
    }

    fn check_array(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        match (r.get("items"), w.get("items")) {
            (Some(ri), Some(wi)) => self.nested(ri, wi, &format!("{path}/items")),
            (Some(ri), None) if ri != &Value::Bool(true) => self.problem(path, "items constrained"),
            _ => {}
        }
    }

    fn check_combiner(
        &mut self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        key: &str,
        path: &str,
    ) {
        let ra = r.get(key).and_then(Value::as_array);
        let wa = w.get(key).and_then(Value::as_array);
        match (ra, wa) {
            (None, None) => {}
            (Some(_), None) => self.problem(path, &format!("{key} added")),
            (None, Some(_)) => {}
            (Some(ra), Some(wa)) => {
                if key == "allOf" && ra.len() > wa.len() {
                    return self.problem(path, "allOf gained subschemas");
                }
                if key != "allOf" && ra.len() < wa.len() {
                    return self.problem(path, &format!("{key} lost subschemas"));
                }
                // Every writer alternative must be readable by some reader alternative.
                for (i, ws) in wa.iter().enumerate() {
                    let readable = ra.iter().any(|rs| {
                        let mut trial = Vec::new();
                        let mut cx = Cx {
                            reader_root: self.reader_root,
                            writer_root: self.writer_root,
                            problems: &mut trial,
                            depth: self.depth + 1,
                        };
                        cx.check(rs, ws, path);
                        trial.is_empty()
                    });
                    if !readable {
                        self.problem(path, &format!("{key} alternative {i} no longer accepted"));
                    }
                }
            }
        }
    }

    fn nested(&mut self, reader: &Value, writer: &Value, path: &str) {
        self.depth += 1;
        self.check(reader, writer, path);
        self.depth -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(text: &str) -> JsonSchema {
        parse(text, &[]).unwrap()
    }

    fn can_read(reader: &str, writer: &str) -> bool {
        read_problems(&js(reader), &js(writer)).is_empty()
    }

    const OPEN_AB: &str =
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}"#;
    const OPEN_A: &str = r#"{"type":"object","properties":{"a":{"type":"string"}}}"#;
    const CLOSED_A: &str =
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#;
    const CLOSED_AB: &str = r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false}"#;

    /// (reader, writer, can read), after Confluent's description of open and closed models.
    #[test]
    fn content_models() {
        let cases = [
            // Removing a property from an open model: the reader still lets it through.
            (OPEN_A, OPEN_AB, true),
            // Adding a property to an open model: old data may hold anything under that name.
            (OPEN_AB, OPEN_A, false),
            // Adding a property to a closed model: old data never has it.
            (CLOSED_AB, CLOSED_A, true),
            // Removing a property from a closed model: old data may have it, reader refuses.
            (CLOSED_A, CLOSED_AB, false),
            (r#"{"type":"number"}"#, r#"{"type":"integer"}"#, true),
            (r#"{"type":"integer"}"#, r#"{"type":"number"}"#, false),
            (
                r#"{"type":"string","maxLength":5}"#,
                r#"{"type":"string","maxLength":10}"#,
                false,
            ),
            (
                r#"{"type":"string","maxLength":10}"#,
                r#"{"type":"string","maxLength":5}"#,
                true,
            ),
            (r#"{"enum":["a","b","c"]}"#, r#"{"enum":["a","b"]}"#, true),
            (r#"{"enum":["a"]}"#, r#"{"enum":["a","b"]}"#, false),
            (
                r#"{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}"#,
                OPEN_A,
                false,
            ),
            (
                r#"{"type":"array","items":{"type":"number"}}"#,
                r#"{"type":"array","items":{"type":"integer"}}"#,
                true,
            ),
            (
                r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#,
                r#"{"oneOf":[{"type":"string"}]}"#,
                true,
            ),
            (
                r#"{"oneOf":[{"type":"string"}]}"#,
                r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#,
                false,
            ),
            ("true", OPEN_AB, true),
        ];
        for (i, (reader, writer, ok)) in cases.iter().enumerate() {
            assert_eq!(
                can_read(reader, writer),
                *ok,
                "case {i}: {reader} <- {writer}"
            );
        }
    }

    #[test]
    fn local_refs_are_followed() {
        let reader = r##"{"definitions":{"n":{"type":"number"}},"type":"object","properties":{"x":{"$ref":"#/definitions/n"}}}"##;
        let writer = r##"{"definitions":{"n":{"type":"integer"}},"type":"object","properties":{"x":{"$ref":"#/definitions/n"}}}"##;
        assert!(can_read(reader, writer));
        assert!(!can_read(writer, reader));
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for text in [
            "",
            "{",
            "1",
            r#"{"type":"nosuchtype"}"#,
            r#"{"minimum":"x"}"#,
        ] {
            assert!(parse(text, &[]).is_err(), "{text}");
        }
    }

    #[test]
    fn references_are_served_from_the_registry() {
        let address = ResolvedReference {
            name: "address.json".into(),
            schema_type: crate::records::SchemaType::Json,
            schema: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into(),
        };
        let text = r#"{"$id":"http://example.com/user.json","type":"object","properties":{"home":{"$ref":"address.json"}}}"#;
        assert!(parse(text, &[]).is_err());
        assert!(parse(text, &[address]).is_ok());
    }
}
