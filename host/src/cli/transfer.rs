//! `kvstash export` / `import`: records as JSON Lines.

use std::io::BufRead;

use anyhow::{Context, bail};
use base64::Engine as _;

use crate::api::Value;

/// One line of an export.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) value: Value,
}

/// Parses every line before anything is written, so a bad file writes nothing.
pub(super) fn read_records(input: impl BufRead) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(&line).with_context(|| format!("line {number}"))?;
        records.push(record);
    }
    Ok(records)
}

pub(super) fn parse_record(line: &str) -> anyhow::Result<Record> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).context("not a JSON object")?;
    let mut text = |field: &str| match object.remove(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => bail!("`{field}` must be a non-empty string"),
        None => bail!("missing `{field}`"),
    };
    let bucket = text("bucket")?;
    let key = text("key")?;
    let value = match (object.remove("value"), object.remove("bytes")) {
        (Some(value), None) => Value::Json(value.to_string()),
        (None, Some(serde_json::Value::String(encoded))) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .context("`bytes` is not valid base64")?,
        ),
        (None, Some(_)) => bail!("`bytes` must be a base64 string"),
        (Some(_), Some(_)) => bail!("has both `value` and `bytes`"),
        (None, None) => bail!("missing `value` (or `bytes`)"),
    };
    if let Some(extra) = object.keys().next() {
        bail!("unknown field `{extra}`");
    }
    Ok(Record { bucket, key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_export_lines_and_names_what_is_wrong() {
        let r = parse_record(r#"{"bucket":"b","key":"k","value":{"a":[1]}}"#).unwrap();
        assert_eq!((r.bucket.as_str(), r.key.as_str()), ("b", "k"));
        assert_eq!(r.value, Value::Json("{\"a\":[1]}".into()));
        let r = parse_record(r#"{"bucket":"b","key":"k","bytes":"AP8="}"#).unwrap();
        assert_eq!(r.value, Value::Bytes(vec![0, 255]));
        for (line, needle) in [
            ("[]", "JSON object"),
            (r#"{"key":"k","value":1}"#, "bucket"),
            (r#"{"bucket":"b","key":"","value":1}"#, "key"),
            (r#"{"bucket":"b","key":"k"}"#, "value"),
            (r#"{"bucket":"b","key":"k","bytes":"!!"}"#, "base64"),
            (r#"{"bucket":"b","key":"k","value":1,"bytes":""}"#, "both"),
            (
                r#"{"bucket":"b","key":"k","value":1,"x":2}"#,
                "unknown field",
            ),
        ] {
            let e = parse_record(line).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{line}: {e:#}");
        }
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let input = "{\"bucket\":\"b\",\"key\":\"k\",\"value\":1}\n\nnot json\n";
        let e = read_records(input.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").starts_with("line 3"), "{e:#}");
    }
}
