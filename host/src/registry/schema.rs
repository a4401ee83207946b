//! Per-region plugin settings are checked against the JSON Schema in the plugin's manifest
//! (`[config_schema]`), so an admin's typo is refused with the path of the bad value instead of
//! reaching the plugin.
//!
//! The host implements the part of JSON Schema that settings need: `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `minimum`, `maximum`,
//! `minLength`, `maxLength`, `minItems`, `maxItems`, and the annotations `title`,
//! `description`, `default` and `examples`. A schema using any other keyword is refused at
//! upload, naming it, so no setting is ever silently left unchecked.

use serde_json::{Map, Value};

/// Keywords the validator understands.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "title",
    "description",
    "default",
    "examples",
];

/// JSON types a schema's `type` may name.
const TYPES: &[&str] = &[
    "object", "array", "string", "integer", "number", "boolean", "null",
];

/// A checked schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema(Value);

impl Schema {
    /// Checks that `schema` uses only understood keywords, in their right shapes. The error
    /// names the path inside the schema.
    pub fn new(schema: Value) -> Result<Schema, String> {
        check_schema(&schema, "config_schema")?;
        Ok(Schema(schema))
    }

    /// Every way `value` breaks the schema, each starting with the path of the bad value
    /// (`config.prizes[2].weight`); empty if it fits.
    pub fn problems(&self, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        validate(&self.0, value, "config", &mut problems);
        problems
    }
}

fn check_schema(schema: &Value, path: &str) -> Result<(), String> {
    let Value::Object(keywords) = schema else {
        return Err(format!("{path} must be a table (a JSON Schema object)"));
    };
    for (keyword, value) in keywords {
        let at = format!("{path}.{keyword}");
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(format!(
                "{at}: this host does not check the keyword {keyword:?}; use only {}",
                KEYWORDS.join(", ")
            ));
        }
        let ok = match keyword.as_str() {
            "type" => match value {
                Value::String(name) => TYPES.contains(&name.as_str()),
                Value::Array(names) => names
                    .iter()
                    .all(|n| n.as_str().is_some_and(|n| TYPES.contains(&n))),
                _ => false,
            },
            "properties" => match value {
                Value::Object(properties) => {
                    for (name, property) in properties {
                        check_schema(property, &format!("{at}.{name}"))?;
                    }
                    true
                }
                _ => false,
            },
            "required" => value
                .as_array()
                .is_some_and(|names| names.iter().all(Value::is_string)),
            "additionalProperties" => match value {
                Value::Bool(_) => true,
                other => {
                    check_schema(other, &at)?;
                    true
                }
            },
            "items" => {
                check_schema(value, &at)?;
                true
            }
            "enum" => value.is_array(),
            "minimum" | "maximum" => value.is_number(),
            "minLength" | "maxLength" | "minItems" | "maxItems" => value.is_u64(),
            "title" | "description" => value.is_string(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at} has the wrong shape for JSON Schema"));
        }
    }
    Ok(())
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a table",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

fn validate(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Value::Object(keywords) = schema else {
        return;
    };
    let keyword = |name: &str| keywords.get(name);
    if let Some(types) = keyword("type") {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.iter().any(|name| type_matches(name, value)) {
            problems.push(format!(
                "{path}: must be {}, not {}",
                names.join(" or "),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = keyword("enum")
        && !allowed.contains(value)
    {
        problems.push(format!(
            "{path}: must be one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(expected) = keyword("const")
        && expected != value
    {
        problems.push(format!("{path}: must be {expected}"));
    }
    if let Value::Number(number) = value {
        if let Some(Value::Number(minimum)) = keyword("minimum")
            && compare(number, minimum) == Some(std::cmp::Ordering::Less)
        {
            problems.push(format!("{path}: must be at least {minimum}"));
        }
        if let Some(Value::Number(maximum)) = keyword("maximum")
            && compare(number, maximum) == Some(std::cmp::Ordering::Greater)
        {
            problems.push(format!("{path}: must be at most {maximum}"));
        }
    }
    if let Value::String(text) = value {
        let length = text.chars().count() as u64;
        if let Some(min) = keyword("minLength").and_then(Value::as_u64)
            && length < min
        {
            problems.push(format!("{path}: must be at least {min} characters"));
        }
        if let Some(max) = keyword("maxLength").and_then(Value::as_u64)
            && length > max
        {
            problems.push(format!("{path}: must be at most {max} characters"));
        }
    }
    if let Value::Array(items) = value {
        let count = items.len() as u64;
        if let Some(min) = keyword("minItems").and_then(Value::as_u64)
            && count < min
        {
            problems.push(format!("{path}: must have at least {min} items"));
        }
        if let Some(max) = keyword("maxItems").and_then(Value::as_u64)
            && count > max
        {
            problems.push(format!("{path}: must have at most {max} items"));
        }
        if let Some(item_schema) = keyword("items") {
            for (index, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{index}]"), problems);
            }
        }
    }
    if let Value::Object(fields) = value {
        validate_object(keywords, fields, path, problems);
    }
}

fn validate_object(
    keywords: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let properties = keywords.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = keywords.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                problems.push(format!("{path}.{name}: is required"));
            }
        }
    }
    for (name, field) in fields {
        let at = format!("{path}.{name}");
        match (
            properties.and_then(|p| p.get(name)),
            keywords.get("additionalProperties"),
        ) {
            (Some(schema), _) => validate(schema, field, &at, problems),
            (None, Some(Value::Bool(false))) => {
                problems.push(format!("{at}: is not a known setting"));
            }
            (None, Some(schema @ Value::Object(_))) => validate(schema, field, &at, problems),
            (None, _) => {}
        }
    }
}

/// Two JSON numbers compared exactly when both are integers (as floats, integers past 2^53
/// round: 9007199254740993 would pass a maximum of 9007199254740992).
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    let integer = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_compare_large_integers_exactly() {
        let schema = Schema::new(json!({"type": "integer", "minimum": -9007199254740992_i64, "maximum": 9007199254740992_u64}))
            .expect("valid schema");
        assert!(schema.problems(&json!(9007199254740992_u64)).is_empty());
        assert_eq!(schema.problems(&json!(9007199254740993_u64)).len(), 1);
        assert_eq!(schema.problems(&json!(-9007199254740993_i64)).len(), 1);
        assert_eq!(schema.problems(&json!(u64::MAX)).len(), 1);
        let fractional =
            Schema::new(json!({"type": "number", "maximum": 1.5})).expect("valid schema");
        assert!(fractional.problems(&json!(1)).is_empty());
        assert_eq!(fractional.problems(&json!(2)).len(), 1);
    }

    fn schema() -> Schema {
        Schema::new(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["greeting"],
            "properties": {
                "greeting": {"type": "string", "minLength": 1, "maxLength": 20},
                "prizes": {"type": "array", "maxItems": 3, "items": {
                    "type": "object",
                    "properties": {"weight": {"type": "integer", "minimum": 1}}
                }},
                "mode": {"enum": ["a", "b"]}
            }
        }))
        .expect("valid schema")
    }

    #[test]
    fn a_fitting_value_has_no_problems() {
        let value = json!({"greeting": "Hi", "prizes": [{"weight": 2}], "mode": "a"});
        assert!(schema().problems(&value).is_empty());
    }

    #[test]
    fn each_problem_names_the_path_of_the_bad_value() {
        let value = json!({
            "prizes": [{"weight": 1}, {"weight": 0}, {"weight": "x"}],
            "mode": "c",
            "colour": "red"
        });
        let problems = schema().problems(&value);
        let expected = [
            "config.greeting: is required",
            "config.prizes[1].weight: must be at least 1",
            "config.prizes[2].weight: must be integer, not a string",
            "config.mode: must be one of [\"a\",\"b\"]",
            "config.colour: is not a known setting",
        ];
        for line in expected {
            assert!(problems.iter().any(|p| p == line), "{line} in {problems:?}");
        }
        assert_eq!(problems.len(), expected.len(), "{problems:?}");
    }

    #[test]
    fn a_keyword_the_host_cannot_check_is_refused_by_name() {
        let error = Schema::new(json!({"properties": {"x": {"pattern": "^a"}}}))
            .expect_err("pattern is not supported");
        assert!(
            error.contains("config_schema.properties.x.pattern"),
            "{error}"
        );
    }
}
