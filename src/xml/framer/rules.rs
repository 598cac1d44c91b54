//! What counts as valid in the framer's tokens: name characters, references, XML characters
//! and the XML declaration (XML 1.0 §2.2, §2.3, §4.1; RFC 6120 §11).

use super::FrameError;

pub(super) fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// XML NameStartChar for ASCII; any non-ASCII byte is accepted here (UTF-8 validity is checked
/// on the complete frame).
pub(super) fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte == b':' || byte >= 0x80
}

pub(super) fn is_name_byte(byte: u8) -> bool {
    is_name_start(byte) || byte.is_ascii_digit() || byte == b'-' || byte == b'.'
}

/// Length of the run of name bytes at the start of `bytes`.
pub(super) fn name_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !is_name_byte(b))
        .unwrap_or(bytes.len())
}

/// `&name;` or `&#...;` (without `&` and `;`): only the predefined entities and character
/// references of legal XML characters.
pub(super) fn check_reference(name: &[u8]) -> Result<(), FrameError> {
    match name {
        b"amp" | b"lt" | b"gt" | b"quot" | b"apos" => Ok(()),
        [b'#', b'x', hex @ ..] if !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit) => {
            check_char_reference(hex, 16)
        }
        [b'#', dec @ ..] if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
            check_char_reference(dec, 10)
        }
        [first, rest @ ..] if is_name_start(*first) && rest.iter().all(|&b| is_name_byte(b)) => {
            Err(FrameError::Restricted("entity reference"))
        }
        _ => Err(FrameError::NotWellFormed("malformed reference")),
    }
}

fn check_char_reference(digits: &[u8], radix: u32) -> Result<(), FrameError> {
    let text = std::str::from_utf8(digits).map_err(|_| FrameError::NotWellFormed("reference"))?;
    let code = u32::from_str_radix(text, radix)
        .map_err(|_| FrameError::NotWellFormed("character reference out of range"))?;
    match char::from_u32(code) {
        Some(c) if is_xml_char(c) => Ok(()),
        _ => Err(FrameError::NotWellFormed(
            "character reference to an illegal character",
        )),
    }
}

/// XML 1.0 `Char` (§2.2): what a document may hold, literally or by reference.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A complete frame must be UTF-8 and hold only XML characters: no C0 controls but tab, LF and
/// CR, and no U+FFFE or U+FFFF (surrogates are already excluded by UTF-8 validation).
pub(super) fn check_xml_chars(bytes: &[u8]) -> Result<(), FrameError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| FrameError::NotWellFormed("invalid UTF-8"))?;
    if bytes
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(FrameError::NotWellFormed("control character"));
    }
    if memchr::memchr(0xEF, bytes).is_some()
        && text.chars().any(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}'))
    {
        return Err(FrameError::NotWellFormed("non-character U+FFFE or U+FFFF"));
    }
    Ok(())
}

/// `<?xml version="1.x" encoding="UTF-8" standalone="..."?>`: the encoding, if given, must be
/// UTF-8 (RFC 6120 §11.6).
pub(super) fn check_declaration(decl: &[u8]) -> Result<(), FrameError> {
    let text = std::str::from_utf8(decl).map_err(|_| FrameError::NotWellFormed("declaration"))?;
    let inner = text
        .strip_prefix("<?xml")
        .and_then(|t| t.strip_suffix("?>"))
        .ok_or(FrameError::NotWellFormed("malformed XML declaration"))?;
    let mut rest = inner.trim_start();
    let mut saw_version = false;
    while !rest.is_empty() {
        let malformed = FrameError::NotWellFormed("XML declaration");
        let (key, after) = rest.split_once('=').ok_or(malformed)?;
        let key = key.trim_end();
        let mut chars = after.trim_start().chars();
        let quote = chars
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or(malformed)?;
        let (value, tail) = chars.as_str().split_once(quote).ok_or(malformed)?;
        match key {
            "version" if value.starts_with("1.") => saw_version = true,
            "version" => return Err(FrameError::NotWellFormed("XML version must be 1.x")),
            "encoding" if value.eq_ignore_ascii_case("utf-8") => {}
            "encoding" => return Err(FrameError::UnsupportedEncoding),
            "standalone" => {}
            _ => return Err(FrameError::NotWellFormed("unknown XML declaration field")),
        }
        rest = tail.trim_start();
    }
    if !saw_version {
        return Err(FrameError::NotWellFormed("XML declaration without version"));
    }
    Ok(())
}
