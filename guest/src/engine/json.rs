//! The JSON syntax check of every value written as JSON: RFC 8259, with
//! the limits of the parser that reads values back (serde_json's), so that
//! what is accepted can be read by every operation. Nesting deeper than
//! `limits.depth` (at most [`MAX_DEPTH`]), a number too large for a double (`1e400`) and an escaped
//! lone surrogate (`"\ud800"`) are refused here, where serde_json's
//! skipping parser (used before) let them in and reading them failed.
//!
//! One pass over the bytes, no allocation, no recursion: several times
//! cheaper than deserializing into `serde::de::IgnoredAny`, and a put
//! checks every value it writes. `tests::agrees_with_serde_json` checks it
//! against `serde_json::Value` parsing on generated and mutated documents.

/// Arrays and objects nested in each other at most (serde_json reads 127).
pub const MAX_DEPTH: usize = 127;

/// Why a text is not JSON: what was expected, and the byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub what: &'static str,
    pub at: usize,
    /// The limit `what` names, if it names one.
    pub limit: Option<usize>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.limit {
            Some(n) => write!(
                f,
                "{} {n} levels (limits.depth) at byte {}",
                self.what, self.at
            ),
            None => write!(f, "{} at byte {}", self.what, self.at),
        }
    }
}

/// What the enclosing containers are: one bit per level, set for an
/// object (its members alternate key and value), clear for an array.
struct Stack {
    bits: [u64; 2],
    depth: usize,
    /// The deepest nesting allowed, at most [`MAX_DEPTH`].
    max: usize,
}

impl Stack {
    fn push(&mut self, object: bool, at: usize) -> Result<(), Invalid> {
        if self.depth >= self.max {
            return Err(Invalid {
                what: "nesting deeper than",
                at,
                limit: Some(self.max),
            });
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.depth += 1;
        Ok(())
    }

    /// Whether the innermost container is an object; `None` at the top.
    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(self.bits[d / 64] & (1 << (d % 64)) != 0)
    }
}

/// Checks that `text` is one JSON value (with surrounding whitespace),
/// nested at most `limits.depth` deep.
pub fn check(text: &str) -> Result<(), Invalid> {
    check_nested(text, super::limits().depth)
}

/// [`check`], nested at most `max` deep (at most [`MAX_DEPTH`]).
pub fn check_nested(text: &str, max: usize) -> Result<(), Invalid> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut stack = Stack {
        bits: [0; 2],
        depth: 0,
        max: max.min(MAX_DEPTH),
    };
    let err = |what, at| {
        Err(Invalid {
            what,
            at,
            limit: None,
        })
    };
    // Each turn reads one value at `i`, then what closes or continues
    // the containers around it.
    'value: loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'{') => {
                stack.push(true, i)?;
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                    stack.depth -= 1;
                } else {
                    i = member_key(b, i)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                stack.push(false, i)?;
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                    stack.depth -= 1;
                } else {
                    continue 'value;
                }
            }
            Some(b'"') => i = string(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => i = number(text, i)?,
            Some(_) => return err("expected a value", i),
            None => return err("expected a value, found the end", i),
        }
        // After a value: close containers, or go on to the next member.
        loop {
            i = skip_ws(b, i);
            let Some(object) = stack.top() else {
                return match i < b.len() {
                    true => err("trailing characters after the value", i),
                    false => Ok(()),
                };
            };
            match (b.get(i), object) {
                (Some(b','), true) => {
                    i = member_key(b, skip_ws(b, i + 1))?;
                    continue 'value;
                }
                (Some(b','), false) => {
                    i += 1;
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    i += 1;
                    stack.depth -= 1;
                }
                (_, true) => return err("expected `,` or `}`", i),
                (_, false) => return err("expected `,` or `]`", i),
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// An object member's key and its `:`; the offset after them.
fn member_key(b: &[u8], i: usize) -> Result<usize, Invalid> {
    if b.get(i) != Some(&b'"') {
        return Err(Invalid {
            what: "expected a string key",
            at: i,
            limit: None,
        });
    }
    let i = skip_ws(b, string(b, i)?);
    if b.get(i) != Some(&b':') {
        return Err(Invalid {
            what: "expected `:`",
            at: i,
            limit: None,
        });
    }
    Ok(i + 1)
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Invalid> {
    match b.get(i..i + word.len()) {
        Some(found) if found == word => Ok(i + word.len()),
        _ => Err(Invalid {
            what: "expected `true`, `false` or `null`",
            at: i,
            limit: None,
        }),
    }
}

/// The string starting at `i` (its `"`); the offset after it. `b` is UTF-8
/// (a `&str`), so only control characters and escapes need checking.
fn string(b: &[u8], start: usize) -> Result<usize, Invalid> {
    let mut i = start + 1;
    loop {
        // Most bytes are plain: skip them in one tight scan.
        let plain = b.get(i..).unwrap_or_default();
        i += plain
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .unwrap_or(plain.len());
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => i = escape(b, i)?,
            Some(0x00..=0x1F) => {
                return Err(Invalid {
                    what: "a control character in a string",
                    at: i,
                    limit: None,
                });
            }
            Some(_) => i += 1,
            None => {
                return Err(Invalid {
                    what: "a string without its closing `\"`",
                    at: start,
                    limit: None,
                });
            }
        }
    }
}

/// The escape at `i` (its `\`); the offset after it. Surrogates must come
/// in pairs, as a UTF-8 reader needs them.
fn escape(b: &[u8], i: usize) -> Result<usize, Invalid> {
    let bad = |what| {
        Err(Invalid {
            what,
            at: i,
            limit: None,
        })
    };
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let Some(n) = hex4(b, i + 2) else {
                return bad("a `\\u` escape without four hex digits");
            };
            match n {
                0xDC00..=0xDFFF => bad("a lone surrogate in a `\\u` escape"),
                0xD800..=0xDBFF => {
                    let trail = match b.get(i + 6..i + 8) {
                        Some(b"\\u") => hex4(b, i + 8),
                        _ => None,
                    };
                    match trail {
                        Some(0xDC00..=0xDFFF) => Ok(i + 12),
                        _ => bad("a lone surrogate in a `\\u` escape"),
                    }
                }
                _ => Ok(i + 6),
            }
        }
        _ => bad("an unknown escape"),
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    let mut n = 0;
    for &d in digits {
        n = n * 16 + char::from(d).to_digit(16)?;
    }
    Some(n)
}

/// The number at `i`; the offset after it. One a double cannot hold
/// (`1e400`) is refused, as serde_json refuses to read it.
fn number(text: &str, start: usize) -> Result<usize, Invalid> {
    let b = text.as_bytes();
    let bad = |what, at| {
        Err(Invalid {
            what,
            at,
            limit: None,
        })
    };
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i),
        _ => return bad("a number without digits", i),
    }
    let int_digits = i - int_start;
    let mut plain = true;
    if b.get(i) == Some(&b'.') {
        plain = false;
        let after = digits(i + 1);
        if after == i + 1 {
            return bad("a number without digits after `.`", i + 1);
        }
        i = after;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        plain = false;
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let after = digits(i);
        if after == i {
            return bad("a number without digits in its exponent", i);
        }
        i = after;
    }
    // Integers of up to 19 digits fit an i64 or u64 exactly; anything else
    // is read as a double, which must be finite *as the reader computes it*:
    // serde_json (without `float_roundtrip`) rounds differently from a
    // correctly rounded parse right at the edge of the range, so it is
    // asked (these numbers are rare; the common ones never get here).
    if (!plain || int_digits > 19) && serde_json::from_str::<f64>(&text[start..i]).is_err() {
        return bad("a number too large for a double", start);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agrees(text: &str) {
        let ours = check(text);
        let theirs = serde_json::from_str::<serde_json::Value>(text);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{text:?}: ours {ours:?}, serde_json {theirs:?}"
        );
    }

    #[test]
    fn known_cases() {
        for text in [
            "0",
            "-0",
            "1",
            "-1",
            "10",
            "1.5",
            "-1.5e10",
            "1E+2",
            "1e-2",
            "123456789012345678901234",
            "1e308",
            "1e309",
            "-1e400",
            "1e-400",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "True",
            "\"\"",
            "\"a\"",
            "\"\\n\\t\\\"\\\\\\/\"",
            "\"\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"\\ud83dx\"",
            "\"\\ud83d\\u0041\"",
            "\"\\u12\"",
            "\"\\x\"",
            "\"\u{1}\"",
            "\"\u{7f}\"",
            "\"é😀\"",
            "\"unclosed",
            "[]",
            "[1,2]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{}",
            "{\"a\":1}",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\":}",
            "{1:2}",
            "{\"a\":1 \"b\":2}",
            "[[[]]]",
            "[{}]",
            "{\"a\":[{\"b\":null}]}",
            " \t\n\r1 \n",
            "",
            " ",
            "1 2",
            "[1]]",
            "[1}",
            "{\"a\":1]",
            "\u{feff}1",
            "nulll",
            "[true false]",
            "[\"a\" , \"b\"]",
            "18446744073709551616",
            "-9223372036854775809",
            "9999999999999999999",
            "99999999999999999999",
            // Where serde_json's rounding and a correctly rounded parse part.
            "1.7976931348623158e308",
            "17976931348623157080e289",
            "1.79769313486231594e308",
            "1.7976931348623157e308",
            "-1.7976931348623158e308",
            "2e308",
        ] {
            agrees(text);
        }
    }

    #[test]
    fn nesting_is_bounded_as_serde_json_reads_it() {
        for depth in [1, 64, 126, 127, 128, 129, 1000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            agrees(&arrays);
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agrees(&objects);
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            check(&deep).unwrap_err().to_string(),
            "nesting deeper than 127 levels (limits.depth) at byte 127"
        );
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    fn generate(rng: &mut Rng, depth: u32, out: &mut String) {
        const ATOMS: &[&str] = &[
            "0",
            "-12",
            "3.25",
            "1e5",
            "-2E-3",
            "1e400",
            "true",
            "false",
            "null",
            "\"\"",
            "\"ab\"",
            "\"\\u00e9\\n\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"é\"",
            "01",
        ];
        match rng.below(if depth > 6 { 1 } else { 4 }) {
            0 => out.push_str(ATOMS[rng.below(ATOMS.len() as u64) as usize]),
            1 => {
                out.push('[');
                for k in 0..rng.below(4) {
                    if k > 0 {
                        out.push(',');
                    }
                    generate(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for k in 0..rng.below(4) {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&format!("\"k{k}\" : "));
                    generate(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
    }

    /// Generated documents, and each with one byte replaced by one of the
    /// characters JSON gives meaning to, or cut short: both checkers agree.
    #[test]
    fn agrees_with_serde_json() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        const MEANINGFUL: &[u8] = b"[]{},:\"\\ 0-.eE+tfnu1";
        for _ in 0..20_000 {
            let mut doc = String::new();
            generate(&mut rng, 0, &mut doc);
            agrees(&doc);
            let mut bytes = doc.clone().into_bytes();
            let at = rng.below(bytes.len() as u64) as usize;
            if bytes[at].is_ascii() {
                bytes[at] = MEANINGFUL[rng.below(MEANINGFUL.len() as u64) as usize];
                if let Ok(text) = String::from_utf8(bytes) {
                    agrees(&text);
                }
            }
            if doc.is_char_boundary(at) {
                agrees(&doc[..at]);
            }
        }
    }
}
