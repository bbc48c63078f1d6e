//! The JSON schema of the Machine API, and checking documents against it.
//!
//! The schema is generated from the serde types in [`crate::api`] with
//! subschemas inlined, the shape a Kubernetes structural schema needs. The
//! same schema drives [`check`], which turns a [`Node`] tree into JSON the
//! serde types accept, collecting every unknown field, wrong type, missing
//! field and out-of-range number on the way instead of stopping at the first.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value as Json};

use crate::diag::{Diagnostic, Pos};
use crate::source::{Node, Value};

/// The inlined JSON schema of `T`, without `$schema`/`title` noise.
pub fn schema_for<T: JsonSchema>() -> Json {
    let settings = SchemaSettings::draft07().with(|s| {
        s.inline_subschemas = true;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
        obj.remove("definitions");
        obj.remove("$defs");
    }
    drop_null_alternatives(&mut value);
    value
}

/// Optional fields are expressed by leaving them out of `required`; the
/// `null` alternatives schemars adds for `Option<T>` have no place in a
/// Kubernetes structural schema.
fn drop_null_alternatives(value: &mut Json) {
    match value {
        Json::Object(obj) => {
            if let Some(Json::Array(types)) = obj.get("type") {
                let rest: Vec<Json> = types
                    .iter()
                    .filter(|t| t.as_str() != Some("null"))
                    .cloned()
                    .collect();
                if rest.len() == 1 {
                    obj.insert("type".into(), rest[0].clone());
                }
            }
            if let Some(Json::Array(alts)) = obj.get("anyOf") {
                let rest: Vec<Json> = alts
                    .iter()
                    .filter(|a| a.get("type").and_then(Json::as_str) != Some("null"))
                    .cloned()
                    .collect();
                if rest.len() == 1 {
                    obj.remove("anyOf");
                    if let Json::Object(inner) = &rest[0] {
                        for (k, v) in inner {
                            obj.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            if let Some(Json::Array(en)) = obj.get_mut("enum") {
                en.retain(|v| !v.is_null());
            }
            for v in obj.values_mut() {
                drop_null_alternatives(v);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}

/// Finds where a field path was written, by walking the document it came
/// from. Kept as the tree rather than a map of paths, because building every
/// path string up front costs more than the whole check of a valid machine.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PathIndex {
    doc: Option<Node>,
}

impl PathIndex {
    /// An index over `doc`.
    pub fn new(doc: Node) -> Self {
        Self { doc: Some(doc) }
    }

    /// The document.
    pub fn root(&self) -> Option<&Node> {
        self.doc.as_ref()
    }

    /// The position of the value at exactly `path`.
    pub fn exact(&self, path: &str) -> Option<Pos> {
        let mut node = self.doc.as_ref()?;
        for key in path.split('.') {
            node = node.get(key)?;
        }
        node.pos
    }

    /// The position of the value at `path` (`spec.network.dns[1]`), or of
    /// its nearest located parent.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        let mut node = self.doc.as_ref()?;
        let mut best = node.pos;
        for part in path.split('.') {
            let (key, indices) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            match node.get(key) {
                Some(n) => node = n,
                None => return best,
            }
            best = node.pos.or(best);
            for idx in indices.split('[').filter(|s| !s.is_empty()) {
                let Ok(i) = idx.trim_end_matches(']').parse::<usize>() else {
                    return best;
                };
                match &node.value {
                    Value::Seq(items) if i < items.len() => node = &items[i],
                    _ => return best,
                }
                best = node.pos.or(best);
            }
        }
        best
    }
}

/// A field path built while walking, formatted only when a diagnostic needs it.
#[derive(Debug, Clone, Copy)]
pub struct FieldPath<'a> {
    parent: Option<&'a FieldPath<'a>>,
    seg: Seg<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> FieldPath<'a> {
    /// A top-level field such as `spec`.
    pub fn root(key: &'a str) -> Self {
        Self {
            parent: None,
            seg: Seg::Key(key),
        }
    }

    fn key(&'a self, key: &'a str) -> FieldPath<'a> {
        FieldPath {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    fn index(&'a self, i: usize) -> FieldPath<'a> {
        FieldPath {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }
}

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.parent {
            write!(f, "{p}")?;
        }
        match self.seg {
            Seg::Key(k) if self.parent.is_some() => write!(f, ".{k}"),
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Decides whether an object key that the schema does not know is tolerated
/// (e.g. fields Crossplane adds to every XR's spec). Gets the object's path
/// and the key.
pub type Tolerate<'a> = &'a dyn Fn(&str, &str) -> bool;

/// Checks `node` against `schema`, returning the JSON to deserialize (absent
/// when the node is null) and recording diagnostics.
pub fn check(
    node: &Node,
    schema: &Json,
    path: &FieldPath<'_>,
    tolerate: Tolerate<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Json> {
    if node.value == Value::Null {
        return None;
    }
    let ty = schema.get("type").and_then(Json::as_str);
    let value = match ty {
        Some("object") => check_object(node, schema, path, tolerate, diags)?,
        Some("array") => {
            let Value::Seq(items) = &node.value else {
                diags.push(type_error(node, path, "a list"));
                return None;
            };
            let item_schema = schema.get("items").unwrap_or(&Json::Null);
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = path.index(i);
                match check(item, item_schema, &p, tolerate, diags) {
                    Some(v) => out.push(v),
                    None if item.value == Value::Null => diags.push(
                        Diagnostic::error(p.to_string(), item.pos, "is empty")
                            .hint("remove the empty entry"),
                    ),
                    None => {}
                }
            }
            Json::Array(out)
        }
        Some("string") => match &node.value {
            Value::Scalar { text, .. } => Json::String(text.clone()),
            _ => {
                diags.push(type_error(node, path, "a string"));
                return None;
            }
        },
        Some("integer") => {
            let n = match &node.value {
                Value::Scalar { text, plain: true } => text.parse::<i64>().ok(),
                _ => None,
            };
            let Some(n) = n else {
                let mut d = type_error(node, path, "a whole number");
                if let Value::Scalar { text, plain: false } = &node.value {
                    if text.trim().parse::<i64>().is_ok() {
                        d = d.hint(format!("write {} without quotes", text.trim()));
                    }
                }
                diags.push(d);
                return None;
            };
            let min = schema.get("minimum").and_then(Json::as_f64);
            let max = schema.get("maximum").and_then(Json::as_f64);
            let below = min.is_some_and(|m| (n as f64) < m);
            let above = max.is_some_and(|m| (n as f64) > m);
            if below || above {
                let range = match (min, max) {
                    (Some(a), Some(b)) => format!("between {a} and {b}"),
                    (Some(a), None) => format!("at least {a}"),
                    // Only reachable with a maximum: a number is out of
                    // range only when some bound exists.
                    (None, b) => format!("at most {}", b.unwrap_or_default()),
                };
                diags.push(
                    Diagnostic::error(path.to_string(), node.pos, format!("{n} is out of range"))
                        .hint(format!("must be {range}")),
                );
                return None;
            }
            Json::from(n)
        }
        Some("boolean") => match &node.value {
            Value::Scalar { text, plain: true } if text.eq_ignore_ascii_case("true") => {
                Json::Bool(true)
            }
            Value::Scalar { text, plain: true } if text.eq_ignore_ascii_case("false") => {
                Json::Bool(false)
            }
            _ => {
                diags.push(type_error(node, path, "true or false"));
                return None;
            }
        },
        _ => generic_json(node),
    };
    if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
        if !allowed.contains(&value) {
            let names: Vec<String> = allowed
                .iter()
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .collect();
            let given = value.as_str().map_or(value.to_string(), str::to_string);
            let near = closest(&given, names.iter().map(String::as_str));
            let hint = match near {
                Some(n) => format!("did you mean {n}? one of {}", names.join(", ")),
                None => format!("one of {}", names.join(", ")),
            };
            diags.push(
                Diagnostic::error(
                    path.to_string(),
                    node.pos,
                    format!("{given} is not a known value"),
                )
                .hint(hint),
            );
            return None;
        }
    }
    Some(value)
}

fn check_object(
    node: &Node,
    schema: &Json,
    path: &FieldPath<'_>,
    tolerate: Tolerate<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Json> {
    let Value::Map(entries) = &node.value else {
        diags.push(type_error(node, path, "a mapping"));
        return None;
    };
    let props = schema.get("properties").and_then(Json::as_object);
    let extra = schema.get("additionalProperties").filter(|v| v.is_object());
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Json::as_array)
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    // Required fields that an unknown key is the likely misspelling of:
    // that key's error says so, and the field is not reported missing too.
    let mut misspelt: Vec<&str> = Vec::new();
    let mut out = Map::new();
    for (key, value) in entries {
        let child_path = path.key(&key.text);
        let child_schema = props.and_then(|p| p.get(&key.text)).or(extra);
        match child_schema {
            Some(s) => {
                if let Some(v) = check(value, s, &child_path, tolerate, diags) {
                    out.insert(key.text.clone(), v);
                }
            }
            None if tolerate(&path.to_string(), &key.text) => {}
            None => {
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let suggestion = closest(&key.text, known.iter().copied());
                let hint = match suggestion {
                    Some(n)
                        if required.contains(&n) && !entries.iter().any(|(k, _)| k.text == n) =>
                    {
                        misspelt.push(n);
                        format!("did you mean {n}? {n} is required, and missing")
                    }
                    Some(n) => format!("did you mean {n}?"),
                    None if known.is_empty() => "this mapping takes no fields".to_string(),
                    None => format!("known fields: {}", known.join(", ")),
                };
                diags.push(
                    Diagnostic::error(child_path.to_string(), key.pos, "unknown field").hint(hint),
                );
            }
        }
    }
    {
        for r in required.iter().copied() {
            if out.contains_key(r) || misspelt.contains(&r) {
                continue;
            }
            let missing = path.key(r).to_string();
            if !has_error_under(diags, &missing) {
                diags.push(
                    Diagnostic::error(missing, node.pos, "is required but missing")
                        .hint(required_hint(schema, r)),
                );
            }
        }
    }
    Some(Json::Object(out))
}

fn required_hint(schema: &Json, field: &str) -> String {
    let desc = schema
        .pointer(&format!("/properties/{field}/description"))
        .and_then(Json::as_str)
        // Descriptions are doc comments, wrapped over lines; a hint is one line.
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|d| {
            d.split(". ")
                .next()
                .unwrap_or(&d)
                .trim_end_matches('.')
                .to_string()
        });
    match desc {
        Some(d) => format!("add {field}, {}", as_object_phrase(&d)),
        None => format!("add {field}"),
    }
}

/// A description ("Name of the Proxmox NixOS template to clone") as the
/// object of a sentence ("the name of the Proxmox NixOS template to
/// clone"): only a plain first word is lowercased, so names and acronyms
/// (Proxmox, RFC, IPv6) keep their case.
fn as_object_phrase(description: &str) -> String {
    let mut chars = description.chars();
    let (Some(first), Some(second)) = (chars.next(), chars.next()) else {
        return description.to_string();
    };
    if !(first.is_uppercase() && second.is_lowercase()) {
        return format!("the {description}");
    }
    let lowered = format!(
        "{}{}",
        first.to_lowercase(),
        &description[first.len_utf8()..]
    );
    if lowered.starts_with("the ") || lowered.starts_with("a ") || lowered.starts_with("an ") {
        lowered
    } else {
        format!("the {lowered}")
    }
}

fn has_error_under(diags: &[Diagnostic], path: &str) -> bool {
    diags.iter().any(|d| {
        d.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

fn type_error(node: &Node, path: &FieldPath<'_>, expected: &str) -> Diagnostic {
    let found = match &node.value {
        Value::Null => "nothing".to_string(),
        Value::Scalar { text, plain } => {
            if *plain {
                text.clone()
            } else {
                format!("the string {text:?}")
            }
        }
        Value::Seq(_) => "a list".to_string(),
        Value::Map(_) => "a mapping".to_string(),
    };
    Diagnostic::error(
        path.to_string(),
        node.pos,
        format!("expected {expected}, found {found}"),
    )
}

fn generic_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Scalar { text, .. } => Json::String(text.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(generic_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.text.clone(), generic_json(v)))
                .collect(),
        ),
    }
}

/// The known name closest to `given`, when it is close enough to be a typo.
pub fn closest<'a>(given: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_ascii_lowercase();
    known
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
