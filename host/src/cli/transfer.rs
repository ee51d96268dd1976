//! `kvstash export` / `import`: records as JSON Lines, and the files of
//! the stores the seeds moved off: TinyDB's JSON file (both ways) and
//! jk_keyvaluestore's directory (in).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

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

/// TinyDB's default table, and the kvstash bucket it becomes.
const TINYDB_DEFAULT_TABLE: &str = "_default";
const DEFAULT_BUCKET: &str = "default";

/// The bucket a TinyDB table becomes, and back.
fn table_to_bucket(table: &str) -> &str {
    if table == TINYDB_DEFAULT_TABLE {
        DEFAULT_BUCKET
    } else {
        table
    }
}

fn bucket_to_table(bucket: &str) -> &str {
    if bucket == DEFAULT_BUCKET {
        TINYDB_DEFAULT_TABLE
    } else {
        bucket
    }
}

/// TinyDB's document ids are whole numbers, stored as their decimal text.
fn is_document_id(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 19
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'))
}

/// A TinyDB JSON file (`{"table": {"1": {document}, …}, …}`): each table
/// becomes a bucket (`_default` the bucket `default`), each document a key
/// (its id) holding the document.
pub(super) fn read_tinydb(text: &str) -> anyhow::Result<Vec<Record>> {
    // TinyDB reads an empty file as an empty database.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let tables: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .context("not a TinyDB file: it is not a JSON object of tables")?;
    if tables.contains_key(TINYDB_DEFAULT_TABLE) && tables.contains_key(DEFAULT_BUCKET) {
        bail!(
            "tables `{TINYDB_DEFAULT_TABLE}` and `{DEFAULT_BUCKET}` would both become bucket `{DEFAULT_BUCKET}`"
        );
    }
    let mut records = Vec::new();
    for (table, documents) in tables {
        let serde_json::Value::Object(documents) = documents else {
            bail!("table `{table}` is not a JSON object of documents");
        };
        for (id, document) in documents {
            if !is_document_id(&id) {
                bail!("table `{table}`: `{id}` is not a TinyDB document id (a whole number)");
            }
            if !document.is_object() {
                bail!("table `{table}`: document {id} is not a JSON object");
            }
            records.push(Record {
                bucket: table_to_bucket(&table).to_string(),
                key: id,
                value: Value::Json(document.to_string()),
            });
        }
    }
    Ok(records)
}

/// Builds a TinyDB file from records: each bucket a table, each key a
/// document id, each value a document. Anything TinyDB could not read back
/// (a key that is not a whole number, a value that is not a JSON object,
/// bytes) is refused, naming it.
#[derive(Debug, Default)]
pub(super) struct TinyDbWriter {
    tables: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

impl TinyDbWriter {
    pub(super) fn add(&mut self, bucket: &str, key: &str, value: &Value) -> anyhow::Result<()> {
        let table = bucket_to_table(bucket);
        if bucket == TINYDB_DEFAULT_TABLE {
            bail!(
                "bucket `{TINYDB_DEFAULT_TABLE}` would become TinyDB's default table, which holds bucket `{DEFAULT_BUCKET}`"
            );
        }
        let where_ = || format!("key `{key}` in bucket `{bucket}`");
        if !is_document_id(key) {
            bail!("{} is not a TinyDB document id (a whole number)", where_());
        }
        let document: serde_json::Value = match value {
            Value::Json(text) => {
                serde_json::from_str(text).context("a stored value is not JSON")?
            }
            Value::Bytes(_) => bail!("{} holds bytes, not a JSON document", where_()),
        };
        if !document.is_object() {
            bail!(
                "{} is not a JSON object (TinyDB documents are objects)",
                where_()
            );
        }
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), document);
        Ok(())
    }

    /// The file, as TinyDB's JSONStorage writes it (one line of JSON).
    pub(super) fn finish(self) -> String {
        serde_json::Value::Object(
            self.tables
                .into_iter()
                .map(|(table, documents)| (table, serde_json::Value::Object(documents)))
                .collect(),
        )
        .to_string()
    }
}

/// A jk_keyvaluestore directory: `DIR/d/TIMESTAMP` files holding
/// `{"key","bDeleted","value"}`; for each key the newest file wins, and a
/// deleted key is left out. Everything goes into `bucket`.
pub(super) fn read_jk_dir(dir: &Path, bucket: &str) -> anyhow::Result<Vec<Record>> {
    let data = dir.join("d");
    if !data.is_dir() {
        bail!(
            "{} is not a jk_keyvaluestore directory: it has no `d` directory",
            dir.display()
        );
    }
    let mut newest: BTreeMap<String, (u128, Option<serde_json::Value>)> = BTreeMap::new();
    let entries =
        std::fs::read_dir(&data).with_context(|| format!("reading {}", data.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", data.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file = || format!("d/{name}");
        let stamp: u128 = name.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: not a jk_keyvaluestore record (its name is not a timestamp)",
                file()
            )
        })?;
        let text =
            std::fs::read_to_string(entry.path()).with_context(|| format!("reading {}", file()))?;
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON object", file()))?;
        let Some(serde_json::Value::String(key)) = record.remove("key") else {
            bail!("{}: `key` is missing or not a string", file());
        };
        let Some(serde_json::Value::Bool(deleted)) = record.remove("bDeleted") else {
            bail!("{}: `bDeleted` is missing or not true/false", file());
        };
        let Some(value) = record.remove("value") else {
            bail!("{}: `value` is missing", file());
        };
        let value = (!deleted).then_some(value);
        match newest.get(&key) {
            Some((seen, _)) if *seen >= stamp => {}
            _ => {
                newest.insert(key, (stamp, value));
            }
        }
    }
    Ok(newest
        .into_iter()
        .filter_map(|(key, (_, value))| {
            value.map(|value| Record {
                bucket: bucket.to_string(),
                key,
                value: Value::Json(value.to_string()),
            })
        })
        .collect())
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
    fn tinydb_tables_become_buckets_and_back() {
        let file = r#"{"_default":{"1":{"alias":"environment_sensor_1","id":[1,5,42]}},"names":{"2":{"n":"x"},"10":{"n":"y"}}}"#;
        let records = read_tinydb(file).unwrap();
        let seen: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.bucket.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(seen, [("default", "1"), ("names", "10"), ("names", "2")]);
        let mut writer = TinyDbWriter::default();
        for r in &records {
            writer.add(&r.bucket, &r.key, &r.value).unwrap();
        }
        let back: serde_json::Value = serde_json::from_str(&writer.finish()).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(file).unwrap()
        );
        assert!(read_tinydb("  \n").unwrap().is_empty());
    }

    #[test]
    fn tinydb_files_and_values_it_cannot_hold_are_named() {
        for (file, needle) in [
            ("[]", "JSON object of tables"),
            (r#"{"t":[1]}"#, "table `t`"),
            (r#"{"t":{"x":{}}}"#, "`x` is not a TinyDB document id"),
            (r#"{"t":{"01":{}}}"#, "`01`"),
            (r#"{"t":{"1":[1]}}"#, "document 1 in table"),
            (r#"{"_default":{},"default":{}}"#, "both become"),
        ] {
            let e = read_tinydb(file).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{file}: {e:#}");
        }
        let mut w = TinyDbWriter::default();
        for (bucket, key, value, needle) in [
            (
                "b",
                "k",
                Value::Json("{}".into()),
                "`k` in bucket `b` is not a TinyDB document id",
            ),
            ("b", "1", Value::Json("[1]".into()), "not a JSON object"),
            ("b", "1", Value::Bytes(vec![1]), "holds bytes"),
            ("_default", "1", Value::Json("{}".into()), "default table"),
        ] {
            let e = w.add(bucket, key, &value).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{bucket}/{key}: {e:#}");
        }
    }

    #[test]
    fn a_jk_directory_gives_each_key_its_newest_live_value() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        for (stamp, record) in [
            ("100", r#"{"key":"a","bDeleted":false,"value":1}"#),
            ("200", r#"{"key":"a","bDeleted":false,"value":{"v":2}}"#),
            ("150", r#"{"key":"b","bDeleted":false,"value":"x"}"#),
            ("160", r#"{"key":"b","bDeleted":true,"value":null}"#),
            ("170", r#"{"key":"c","bDeleted":false,"value":null}"#),
        ] {
            std::fs::write(d.join(stamp), record).unwrap();
        }
        let records = read_jk_dir(dir.path(), "cfg").unwrap();
        let seen: Vec<(&str, &Value)> =
            records.iter().map(|r| (r.key.as_str(), &r.value)).collect();
        assert_eq!(
            seen,
            [
                ("a", &Value::Json("{\"v\":2}".into())),
                ("c", &Value::Json("null".into()))
            ]
        );
        std::fs::write(d.join("notes.txt"), "hi").unwrap();
        let e = read_jk_dir(dir.path(), "cfg").unwrap_err();
        assert!(format!("{e:#}").contains("d/notes.txt"), "{e:#}");
        let e = read_jk_dir(&d, "cfg").unwrap_err();
        assert!(format!("{e:#}").contains("no `d` directory"), "{e:#}");
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let input = "{\"bucket\":\"b\",\"key\":\"k\",\"value\":1}\n\nnot json\n";
        let e = read_records(input.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").starts_with("line 3"), "{e:#}");
    }
}
