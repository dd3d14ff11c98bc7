//! What a display class can draw: length in characters and the GB2312 character set.
//! Pure functions of the text and the class; no file or device is consulted.

use crate::core::model::{Charset, ClassProfile};

/// At most this many bad characters are listed for one text.
const MAX_BAD_CHARS: usize = 10;

/// The first control character of `text` (NUL, ESC, a line break...), named with its 1-based
/// position: a slogan text is one line that a display draws, and a control byte reaching an
/// LED controller may be read as a command.
pub fn control_char(text: &str) -> Option<String> {
    let (i, c) = text.chars().enumerate().find(|(_, c)| c.is_control())?;
    Some(format!(
        "control character U+{:04X} at position {}: a slogan text is one line of visible characters",
        u32::from(c),
        i + 1
    ))
}

/// Problems of `text` on a display of `class`, one message each: too many characters (counted
/// as Unicode scalar values), and for a `gb2312` class every character GB2312 lacks, named with
/// its 1-based position. Empty when the class can show the text.
pub fn check_text(text: &str, class: &ClassProfile) -> Vec<String> {
    let mut out = Vec::new();
    let n = text.chars().count();
    if n > class.max_chars {
        out.push(format!(
            "{n} characters, more than the {} that class {} can show",
            class.max_chars, class.name
        ));
    }
    if class.charset == Charset::Gb2312 {
        let mut bad = text
            .chars()
            .enumerate()
            .filter(|(_, c)| !gb2312_can_draw(*c));
        for (i, c) in bad.by_ref().take(MAX_BAD_CHARS) {
            out.push(format!(
                "character {c:?} at position {} cannot be drawn by class {} (gb2312)",
                i + 1,
                class.name
            ));
        }
        let more = bad.count();
        if more > 0 {
            out.push(format!(
                "and {more} more characters that class {} (gb2312) cannot draw",
                class.name
            ));
        }
    }
    out
}

/// Whether `c` is ASCII or in GB2312 (EUC-CN): encoded with GBK, it must take one byte below
/// 0x80 or two bytes in a cell that GB2312 itself fills (GBK adds characters and private-use
/// cells in the same byte area, which GB2312-only controllers cannot draw).
pub(crate) fn gb2312_can_draw(c: char) -> bool {
    let mut buf = [0u8; 4];
    let s: &str = c.encode_utf8(&mut buf);
    let (bytes, _, had_errors) = encoding_rs::GBK.encode(s);
    if had_errors {
        return false;
    }
    match *bytes {
        [b] => b < 0x80,
        [lead, trail] => gb2312_cell(lead, trail),
        _ => false,
    }
}

/// The cells GB2312 assigns: 682 symbols in rows 1-9 and 6763 hanzi in rows 16-87.
fn gb2312_cell(lead: u8, trail: u8) -> bool {
    if !(0xA1..=0xFE).contains(&trail) {
        return false;
    }
    let within = |ranges: &[(u8, u8)]| ranges.iter().any(|(a, b)| (*a..=*b).contains(&trail));
    match lead {
        0xA1 | 0xA3 => true,
        0xA2 => within(&[(0xB1, 0xE2), (0xE5, 0xEE), (0xF1, 0xFC)]),
        0xA4 => within(&[(0xA1, 0xF3)]),
        0xA5 => within(&[(0xA1, 0xF6)]),
        0xA6 => within(&[(0xA1, 0xB8), (0xC1, 0xD8)]),
        0xA7 => within(&[(0xA1, 0xC1), (0xD1, 0xF1)]),
        0xA8 => within(&[(0xA1, 0xBA), (0xC5, 0xE9)]),
        0xA9 => within(&[(0xA4, 0xEF)]),
        0xD7 => within(&[(0xA1, 0xF9)]),
        0xB0..=0xF7 => true,
        _ => false,
    }
}
