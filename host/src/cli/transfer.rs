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
pub(crate) struct Record {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) value: Value,
}

/// Parses every line before anything is written, so a bad file writes nothing.
pub(crate) fn read_records(input: impl BufRead) -> anyhow::Result<Vec<Record>> {
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

/// An output file written beside its destination and renamed over it when
/// complete ([`Aside::commit`]); dropped uncommitted, it is removed.
#[derive(Debug)]
pub(super) struct Aside {
    path: std::path::PathBuf,
    temp: std::path::PathBuf,
    file: std::fs::File,
    committed: bool,
}

impl Aside {
    pub(super) fn create(path: &Path) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file path", path.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".kvstash-{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file =
            std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            temp,
            file,
            committed: false,
        })
    }

    /// Another handle on the file being written.
    pub(super) fn file(&self) -> anyhow::Result<std::fs::File> {
        Ok(self.file.try_clone()?)
    }

    /// Makes the file durable and puts it in place.
    pub(super) fn commit(mut self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("writing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.path.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// TinyDB's document ids are whole numbers, stored as their decimal text.
fn document_id(key: &str) -> Option<u64> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    canonical.then(|| key.parse().ok()).flatten()
}

fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// A TinyDB JSON file (`{"table": {"1": {document}, …}, …}`): each table
/// becomes the bucket of the same name (TinyDB's default table is
/// `_default`), each document a key (its id) holding the document's text
/// as TinyDB wrote it.
pub(crate) fn read_tinydb(text: &str) -> anyhow::Result<Vec<Record>> {
    use serde_json::value::RawValue;
    // TinyDB reads an empty file as an empty database.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let tables: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).context("not a TinyDB file")?;
    let mut records = Vec::new();
    for (table, documents) in tables {
        if !is_object(documents.get()) {
            bail!("table `{table}` is not a JSON object of documents");
        }
        let documents: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(documents.get()).with_context(|| format!("table `{table}`"))?;
        for (id, document) in documents {
            if document_id(&id).is_none() {
                bail!("table `{table}`: `{id}` is not a TinyDB document id (a whole number)");
            }
            if !is_object(document.get()) {
                bail!("table `{table}`: document {id} is not a JSON object");
            }
            records.push(Record {
                bucket: table.clone(),
                key: id,
                value: Value::Json(document.get().to_string()),
            });
        }
    }
    Ok(records)
}

/// Builds a TinyDB file from records: each bucket the table of the same
/// name, each key a document id, each value a document. Anything TinyDB
/// could not read back (a key that is not a whole number, a value that is
/// not a JSON object, bytes) is refused, naming it.
#[derive(Debug, Default)]
pub(super) struct TinyDbWriter {
    /// Table → id → the document's JSON text.
    tables: BTreeMap<String, BTreeMap<u64, String>>,
}

impl TinyDbWriter {
    pub(super) fn add(&mut self, bucket: &str, key: &str, value: &Value) -> anyhow::Result<()> {
        let where_ = || format!("key `{key}` in bucket `{bucket}`");
        let Some(id) = document_id(key) else {
            bail!("{} is not a TinyDB document id (a whole number)", where_());
        };
        let text = match value {
            Value::Json(text) => text,
            Value::Bytes(_) => bail!("{} holds bytes, not a JSON document", where_()),
        };
        if !is_object(text) {
            bail!(
                "{} is not a JSON object (TinyDB documents are objects)",
                where_()
            );
        }
        self.tables
            .entry(bucket.to_string())
            .or_default()
            .insert(id, text.clone());
        Ok(())
    }

    /// The file: tables by name, documents by id, each document's text as
    /// stored, non-ASCII escaped as Python's `json.dumps` does (TinyDB reads
    /// the file in the locale's encoding).
    pub(super) fn finish(self) -> String {
        let mut out = String::from("{");
        for (t, (table, documents)) in self.tables.iter().enumerate() {
            if t > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::Value::from(table.as_str()).to_string());
            out.push_str(": {");
            for (d, (id, document)) in documents.iter().enumerate() {
                if d > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!("\"{id}\": {document}"));
            }
            out.push('}');
        }
        out.push('}');
        ascii_only(&out)
    }
}

/// JSON text with every non-ASCII character as a `\uXXXX` escape (outside
/// strings JSON has no non-ASCII, so this only touches string contents).
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
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
        // The library deletes superseded records as it writes: one listed
        // a moment ago may be gone, and then a newer one holds its key.
        let text = match std::fs::read_to_string(entry.path()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file())),
        };
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
        let file = r#"{"_default": {"1": {"alias": "environment_sensor_1", "id": [1, 5, 42]}}, "names": {"2": {"n": "x\u00e9"}, "10": {"n": "y", "big": 123456789012345678901234567890}}}"#;
        let records = read_tinydb(file).unwrap();
        let seen: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.bucket.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(seen, [("_default", "1"), ("names", "10"), ("names", "2")]);
        // Documents keep TinyDB's text: field order, big numbers, escapes.
        assert_eq!(
            records[1].value,
            Value::Json(r#"{"n": "y", "big": 123456789012345678901234567890}"#.into())
        );
        let mut writer = TinyDbWriter::default();
        for r in &records {
            writer.add(&r.bucket, &r.key, &r.value).unwrap();
        }
        // Ids in numeric order, as TinyDB lists them: the file comes back.
        assert_eq!(writer.finish(), file);
        assert!(read_tinydb("  \n").unwrap().is_empty());
        let mut w = TinyDbWriter::default();
        w.add("t", "1", &Value::Json("{\"s\":\"é😀\"}".into()))
            .unwrap();
        assert_eq!(w.finish(), r#"{"t": {"1": {"s":"\u00e9\ud83d\ude00"}}}"#);
    }

    #[test]
    fn tinydb_files_and_values_it_cannot_hold_are_named() {
        for (file, needle) in [
            ("[]", "not a TinyDB file"),
            (r#"{"t": {"1": {"x": NaN}}}"#, "not a TinyDB file"),
            (r#"{"t":[1]}"#, "table `t` is not a JSON object"),
            (r#"{"t":{"x":{}}}"#, "`x` is not a TinyDB document id"),
            (r#"{"t":{"01":{}}}"#, "`01`"),
            (r#"{"t":{"1":[1]}}"#, "document 1 is not a JSON object"),
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
