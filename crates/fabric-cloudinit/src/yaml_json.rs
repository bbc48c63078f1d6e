//! JSON that PyYAML reads back exactly: the body of every file we render.
//!
//! cloud-init parses its files as YAML 1.1, where an unquoted `no`, `12:30`
//! or `52:54:00:12:34:56` stops being a string. JSON is valid YAML with every
//! string quoted, so writing JSON removes that whole class of bugs, and a
//! serializer (instead of format strings) makes injection impossible by
//! construction. Two gaps remain between the JSON and YAML 1.1 grammars, and
//! this formatter closes them:
//!
//! - PyYAML refuses some characters that JSON allows raw (DEL, C1 controls,
//!   U+FFFE/U+FFFF), and YAML 1.1 counts others as line breaks (NEL, U+2028,
//!   U+2029): PyYAML folds a raw NEL inside a quoted scalar into a space.
//!   Every character outside printable ASCII in the Basic Multilingual Plane
//!   is written as `\uXXXX`, an escape both grammars decode to the same
//!   character.
//! - JSON spells characters beyond the BMP as surrogate-pair escapes, which
//!   PyYAML decodes into two lone surrogates. Those characters stay raw UTF-8,
//!   which PyYAML (5.1 and later) accepts inside quoted scalars.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, PrettyFormatter};

/// Serializes `value` as indented JSON that YAML 1.1 reads as the same
/// structure, without a trailing newline.
pub(crate) fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, YamlSafe::default());
    value.serialize(&mut ser)?;
    // The formatter only ever writes ASCII, raw UTF-8 taken from &str
    // fragments, or escapes, so the bytes are UTF-8; the fallback keeps this
    // free of panics all the same.
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// [`PrettyFormatter`] with string escaping made safe for YAML 1.1.
#[derive(Default)]
struct YamlSafe {
    pretty: PrettyFormatter<'static>,
}

/// Whether a character may be written as it is inside a quoted scalar.
fn is_plain(c: char) -> bool {
    matches!(c, ' '..='~') || u32::from(c) > 0xFFFF
}

impl Formatter for YamlSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_plain(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            write!(writer, "\\u{:04x}", u32::from(c))?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        // serde_json's own escapes (\" \\ \n \t \r \b \f \u00XX) all have the
        // same meaning in YAML 1.1 double-quoted scalars; `\/` (which YAML 1.1
        // lacks) is never produced by serde_json.
        serde_json::ser::CompactFormatter.write_char_escape(writer, char_escape)
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_array(writer)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object(writer)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_yaml_would_misread() {
        let s = to_string(&[
            "a\u{7f}b",
            "\u{85}",
            "\u{2028}\u{fffe}",
            "é",
            "\u{1F600}",
            "q\"\\\n",
        ])
        .unwrap();
        assert!(s.contains(r#""a\u007fb""#), "{s}");
        assert!(s.contains(r#""\u0085""#), "{s}");
        assert!(s.contains(r#""\u2028\ufffe""#), "{s}");
        assert!(s.contains(r#""\u00e9""#), "{s}");
        assert!(s.contains("\"\u{1F600}\""), "{s}");
        assert!(s.contains(r#""q\"\\\n""#), "{s}");
        // Nothing outside printable ASCII, newlines and non-BMP characters.
        assert!(s
            .chars()
            .all(|c| matches!(c, ' '..='~' | '\n') || u32::from(c) > 0xFFFF));
    }

    #[test]
    fn keeps_structure_and_order() {
        let mut m = serde_json::Map::new();
        m.insert("z".into(), "no".into());
        m.insert("a".into(), serde_json::json!([1, true, null]));
        let s = to_string(&m).unwrap();
        assert_eq!(
            s,
            "{\n  \"z\": \"no\",\n  \"a\": [\n    1,\n    true,\n    null\n  ]\n}"
        );
    }

    proptest! {
        #[test]
        fn json_round_trips_any_string(s in any::<String>()) {
            let text = to_string(&s).unwrap();
            let back: String = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, s);
            prop_assert!(text.chars().all(|c| matches!(c, ' '..='~') || u32::from(c) > 0xFFFF));
        }
    }
}
