//! The LED preview: a slogan drawn as a display class would draw it on its 16-pixel-high
//! matrix, with GNU Unifont's bitmap glyphs (8 px half-width, 16 px full-width; the `unifont`
//! crate embeds Unifont 15.1.05, used under the SIL Open Font License 1.1, see
//! `assets/console/LICENSE-unifont.txt`). A text that fits the class's `width_px` stands
//! still, centred, as the bus and taxi controllers show a short text; a wider one scrolls
//! right to left at `scroll_px_per_s`, and one pass (entering at the right edge, leaving at
//! the left) takes (text width + display width) / speed.
//!
//! Pure: plain text and a [`ClassProfile`] in, a [`Preview`] out. What a class cannot show is
//! refused by the same check as the catalog's (`check_text`, `control_char`), so `civicast
//! check` and the preview never disagree; a character Unifont has no glyph for is drawn as an
//! empty box and listed in [`Preview::missing`], never dropped. It is an approximation: the
//! controller's own font differs in strokes and spacing. Must not touch I/O or the shells.

use std::fmt::Write as _;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::core::catalog::{check_text, control_char};
use crate::core::model::ClassProfile;

/// Rows of every matrix the preview draws.
pub const HEIGHT: usize = 16;

/// Version of the GNU Unifont glyphs that the `unifont` crate embeds.
pub const UNIFONT_VERSION: &str = "15.1.05";

/// The label every preview carries.
pub const APPROXIMATION: &str = "An approximation: drawn with GNU Unifont 15.1.05 on a 16-pixel-high matrix; the display's controller uses its own font, so strokes and spacing may differ.";

/// The about page's note on the font, in English; [`FONT_LICENCE`] is the whole notice.
pub const FONT_NOTICE_EN: &str = "The LED preview draws with GNU Unifont 15.1.05 (Copyright (C) 1998-2024 Roman Czyborra, Paul Hardy, Qianqian Fang, Andrew Miller, Johnnie Weaver, David Corbett, Nils Moskopp, Rebecca Bettencourt, Ho-Seok Ee, et al.), embedded by the unifont crate (MIT) and used under the SIL Open Font License 1.1 (Unifont is also offered under the GNU GPL 2+ with the font embedding exception). The preview approximates each display controller's own font.";
/// The same note in Simplified Chinese.
pub const FONT_NOTICE_ZH: &str = "LED 预览使用 GNU Unifont 15.1.05 点阵字体绘制（版权所有 (C) 1998-2024 Roman Czyborra、Paul Hardy、Qianqian Fang、Andrew Miller、Johnnie Weaver、David Corbett、Nils Moskopp、Rebecca Bettencourt、Ho-Seok Ee 等），由 unifont crate（MIT 许可）嵌入，依 SIL 开放字体许可证 1.1 使用（Unifont 亦以附字体嵌入例外的 GNU GPL 2 或更高版本发布）。预览只是近似，实际效果以各显示屏控制器自带的字体为准。";
/// The full notice and licence texts (`assets/console/LICENSE-unifont.txt`), for the about
/// page to serve as they are.
pub const FONT_LICENCE: &str = include_str!("../../assets/console/LICENSE-unifont.txt");

/// Width in pixels of the box drawn for a character Unifont lacks (a half-width cell).
const MISSING_WIDTH: usize = 8;

/// A 16-row monochrome bitmap, row-major, each row [`Bitmap::stride`] bytes with the
/// leftmost pixel in the high bit of the first byte (the packing of Unifont's own hex rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    width: usize,
    bits: Vec<u8>,
}

impl Bitmap {
    /// An unlit bitmap `width` pixels wide.
    pub fn new(width: usize) -> Self {
        Bitmap {
            width,
            bits: vec![0; width.div_ceil(8) * HEIGHT],
        }
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        HEIGHT
    }
    /// Bytes a row.
    pub fn stride(&self) -> usize {
        self.width.div_ceil(8)
    }
    /// Whether the LED at column `x`, row `y` is lit; outside the bitmap nothing is.
    pub fn get(&self, x: usize, y: usize) -> bool {
        x < self.width
            && y < HEIGHT
            && self.bits[y * self.stride() + x / 8] & (0x80 >> (x % 8)) != 0
    }
    fn set(&mut self, x: usize, y: usize) {
        if x < self.width && y < HEIGHT {
            let i = y * self.stride() + x / 8;
            self.bits[i] |= 0x80 >> (x % 8);
        }
    }
    /// Row `y` packed, as lower-case hex (two digits a byte).
    pub fn row_hex(&self, y: usize) -> String {
        let s = self.stride();
        let mut out = String::with_capacity(2 * s);
        for b in self.bits.get(y * s..(y + 1) * s).unwrap_or(&[]) {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
    /// The lit runs of row `y`: (first column, length), left to right.
    pub fn runs(&self, y: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut x = 0;
        while x < self.width {
            if self.get(x, y) {
                let start = x;
                while x < self.width && self.get(x, y) {
                    x += 1;
                }
                out.push((start, x - start));
            } else {
                x += 1;
            }
        }
        out
    }
}

/// `{"width": .., "height": 16, "rows": ["00ff..", ..]}`: sixteen hex rows.
impl Serialize for Bitmap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<String> = (0..HEIGHT).map(|y| self.row_hex(y)).collect();
        let mut st = s.serialize_struct("Bitmap", 3)?;
        st.serialize_field("width", &self.width)?;
        st.serialize_field("height", &HEIGHT)?;
        st.serialize_field("rows", &rows)?;
        st.end()
    }
}

/// How the matrix shows the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// It fits: still, centred.
    Static,
    /// Wider than the matrix: it scrolls right to left.
    Scroll,
}

/// A character drawn as an empty box because Unifont has no glyph for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// 1-based, in characters, as the catalog's problems count.
    pub position: usize,
    pub character: char,
    /// `U+1F600`.
    pub codepoint: String,
}

/// A slogan as a class draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub class: String,
    pub text: String,
    /// The text alone: as wide as its glyphs, 16 high.
    pub bitmap: Bitmap,
    /// The class's matrix width (`width_px`).
    pub display_width: u32,
    pub fits: bool,
    pub layout: Layout,
    /// Where the text's first column sits on the matrix while static (centred); 0 when it
    /// scrolls.
    pub offset_x: u32,
    pub scroll_px_per_s: u32,
    /// Seconds one pass takes: (text width + display width) / speed; `None` when static.
    pub pass_s: Option<f64>,
    /// The class's time on screen for one play, to set `pass_s` against.
    pub duration_s: f64,
    pub missing: Vec<Missing>,
    pub approximation: &'static str,
}

/// Why a text cannot be previewed for a class: each message says which character or limit,
/// worded as `civicast check` words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedError {
    #[error("empty text: there is nothing to draw")]
    Empty,
    #[error("{}", .0.join("; "))]
    CannotShow(Vec<String>),
}

/// The width in pixels of `c` as drawn: Unifont's (8 or 16), or the missing box's.
pub fn glyph_width(c: char) -> usize {
    unifont::get_glyph(c).map_or(MISSING_WIDTH, unifont::Glyph::get_width)
}

/// Seconds one pass of a scrolling text takes: it enters at the right edge and has left at
/// the left edge after travelling its own width plus the display's.
pub fn pass_seconds(text_width: usize, display_width: u32, px_per_s: u32) -> f64 {
    (text_width as f64 + f64::from(display_width)) / f64::from(px_per_s.max(1))
}

/// `text` drawn for `class`, or why the class cannot show it (the catalog's own check).
pub fn render(text: &str, class: &ClassProfile) -> Result<Preview, LedError> {
    if text.trim().is_empty() {
        return Err(LedError::Empty);
    }
    if let Some(m) = control_char(text) {
        return Err(LedError::CannotShow(vec![m]));
    }
    let problems = check_text(text, class);
    if !problems.is_empty() {
        return Err(LedError::CannotShow(problems));
    }
    let (bitmap, missing) = draw(text);
    let display = class.width_px;
    let width = bitmap.width();
    let fits = u32::try_from(width).is_ok_and(|w| w <= display);
    let (layout, offset_x, pass_s) = if fits {
        let w = u32::try_from(width).unwrap_or(display);
        (Layout::Static, (display - w) / 2, None)
    } else {
        let pass = pass_seconds(width, display, class.scroll_px_per_s);
        (Layout::Scroll, 0, Some(pass))
    };
    Ok(Preview {
        class: class.name.clone(),
        text: text.to_owned(),
        bitmap,
        display_width: display,
        fits,
        layout,
        offset_x,
        scroll_px_per_s: class.scroll_px_per_s,
        pass_s,
        duration_s: class.duration.as_secs_f64(),
        missing,
        approximation: APPROXIMATION,
    })
}

/// The glyphs of `text` side by side, and the characters drawn as boxes.
fn draw(text: &str) -> (Bitmap, Vec<Missing>) {
    let width = text.chars().map(glyph_width).sum();
    let mut bm = Bitmap::new(width);
    let mut missing = Vec::new();
    let mut x0 = 0;
    for (i, c) in text.chars().enumerate() {
        match unifont::get_glyph(c) {
            Some(g) => {
                for y in 0..HEIGHT {
                    for x in 0..g.get_width() {
                        if g.get_pixel(x, y) {
                            bm.set(x0 + x, y);
                        }
                    }
                }
            }
            None => {
                draw_box(&mut bm, x0);
                missing.push(Missing {
                    position: i + 1,
                    character: c,
                    codepoint: format!("U+{:04X}", u32::from(c)),
                });
            }
        }
        x0 += glyph_width(c);
    }
    (bm, missing)
}

/// An empty box in the cell at `x0`, rows 2 to 13, so a missing glyph shows as a gap with an
/// outline rather than as nothing.
fn draw_box(bm: &mut Bitmap, x0: usize) {
    let (left, right, top, bottom) = (x0 + 1, x0 + MISSING_WIDTH - 2, 2, 13);
    for x in left..=right {
        bm.set(x, top);
        bm.set(x, bottom);
    }
    for y in top..=bottom {
        bm.set(left, y);
        bm.set(right, y);
    }
}

/// Amber, the colour of most bus boards.
const LIT: &str = "#ffb000";
const UNLIT: &str = "#2a1d00";
const BACKGROUND: &str = "#0b0b0b";
/// Screen pixels an LED takes in the SVG's default size.
const SCALE: usize = 4;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The preview as an SVG for pages without JavaScript: the matrix at the class's width, every
/// LED a dot, the text placed as it stands (centred) when it fits; when it scrolls, the whole
/// text drawn out with a dashed frame round the part the matrix shows at once.
pub fn svg(p: &Preview) -> String {
    let display = usize::try_from(p.display_width).unwrap_or(usize::MAX);
    let w = p.bitmap.width().max(display);
    let x0 = usize::try_from(p.offset_x).unwrap_or(0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {HEIGHT}" width="{}" height="{}" role="img" shape-rendering="crispEdges"><title>{} ({}, {} px; {})</title>"#,
        w * SCALE,
        HEIGHT * SCALE,
        escape(&p.text),
        escape(&p.class),
        p.display_width,
        escape(p.approximation),
    );
    let _ = write!(
        out,
        r#"<defs><pattern id="led" width="1" height="1" patternUnits="userSpaceOnUse"><circle cx="0.5" cy="0.5" r="0.4" fill="{UNLIT}"/></pattern></defs><rect width="{w}" height="{HEIGHT}" fill="{BACKGROUND}"/><rect width="{w}" height="{HEIGHT}" fill="url(#led)"/><g fill="{LIT}">"#,
    );
    for y in 0..HEIGHT {
        for (x, n) in p.bitmap.runs(y) {
            for i in 0..n {
                let _ = write!(
                    out,
                    r#"<circle cx="{}.5" cy="{y}.5" r="0.45"/>"#,
                    x0 + x + i
                );
            }
        }
    }
    out.push_str("</g>");
    if !p.fits {
        let _ = write!(
            out,
            r##"<rect x="0.1" y="0.1" width="{}" height="{}" fill="none" stroke="#ffffff" stroke-width="0.2" stroke-dasharray="1 1"/>"##,
            display as f64 - 0.2,
            HEIGHT as f64 - 0.2
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Charset;
    use proptest::prelude::*;
    use std::time::Duration;

    fn class(width_px: u32, speed: u32, charset: Charset) -> ClassProfile {
        ClassProfile {
            name: "bus_led".into(),
            max_chars: 40,
            charset,
            duration: Duration::from_secs(15),
            width_px,
            scroll_px_per_s: speed,
        }
    }

    #[test]
    fn ascii_is_half_width_and_hanzi_full_width() {
        assert_eq!(glyph_width('A'), 8);
        assert_eq!(glyph_width(' '), 8);
        assert_eq!(glyph_width('讲'), 16);
        assert_eq!(glyph_width('　'), 16, "the ideographic space");
        assert_eq!(glyph_width('，'), 16, "full-width punctuation");
        let p = render("K1路", &class(192, 32, Charset::Gb2312)).expect("drawn");
        assert_eq!(p.bitmap.width(), 8 + 8 + 16);
    }

    #[test]
    fn the_glyphs_are_unifonts_own() {
        // Unifont's hex file: `0041:0000000018242442427E424242420000`.
        let p = render("A", &class(192, 32, Charset::Utf8)).expect("drawn");
        let rows: Vec<String> = (0..HEIGHT).map(|y| p.bitmap.row_hex(y)).collect();
        assert_eq!(rows.concat(), "0000000018242442427e424242420000");
        assert_eq!(p.bitmap.runs(9), vec![(1, 6)], "the bar of the A");
    }

    #[test]
    fn a_pass_takes_text_plus_display_width_over_speed() {
        assert_eq!(pass_seconds(320, 192, 32), 16.0);
        assert_eq!(pass_seconds(0, 64, 16), 4.0);
        // 21 hanzi (336 px) on a 192 px board at 32 px/s: (336 + 192) / 32.
        let text = "讲文明树新风自觉排队文明乘车礼让行人从我做起好";
        let p = render(text, &class(192, 32, Charset::Gb2312)).expect("drawn");
        assert_eq!(p.bitmap.width(), 16 * text.chars().count());
        assert_eq!(p.pass_s, Some((p.bitmap.width() as f64 + 192.0) / 32.0));
    }

    #[test]
    fn a_text_that_fits_stands_still_centred() {
        let p = render("讲文明 树新风", &class(192, 32, Charset::Gb2312)).expect("drawn");
        assert_eq!(p.bitmap.width(), 6 * 16 + 8);
        assert!(p.fits);
        assert_eq!(p.layout, Layout::Static);
        assert_eq!(p.offset_x, (192 - 104) / 2);
        assert_eq!(p.pass_s, None);
        // Exactly as wide as the matrix still fits.
        let p = render("讲文明树", &class(64, 24, Charset::Gb2312)).expect("drawn");
        assert!(p.fits);
        assert_eq!(p.offset_x, 0);
    }

    #[test]
    fn a_text_wider_than_the_matrix_scrolls() {
        let p = render("讲文明 树新风", &class(64, 24, Charset::Gb2312)).expect("drawn");
        assert!(!p.fits);
        assert_eq!(p.layout, Layout::Scroll);
        assert_eq!(p.offset_x, 0);
        assert_eq!(p.pass_s, Some((104.0 + 64.0) / 24.0));
        assert!(svg(&p).contains("stroke-dasharray"), "the window is framed");
    }

    #[test]
    fn what_the_class_cannot_show_is_refused_as_check_words_it() {
        let gb = class(192, 32, Charset::Gb2312);
        let Err(LedError::CannotShow(m)) = render("文明😀", &gb) else {
            panic!("an emoji on a GB2312 board");
        };
        assert_eq!(m, check_text("文明😀", &gb));
        assert!(m[0].contains("position 3"), "{m:?}");
        let short = ClassProfile {
            max_chars: 3,
            ..gb.clone()
        };
        assert!(matches!(
            render("讲文明树", &short),
            Err(LedError::CannotShow(_))
        ));
        assert!(matches!(
            render("a\u{1b}b", &gb),
            Err(LedError::CannotShow(_))
        ));
        assert_eq!(render("  ", &gb), Err(LedError::Empty));
    }

    #[test]
    fn a_glyph_unifont_lacks_is_a_listed_box() {
        // Outside the Basic Multilingual Plane, which is all that Unifont's crate covers.
        let p = render("a😀b", &class(192, 32, Charset::Utf8)).expect("drawn");
        assert_eq!(
            p.missing,
            vec![Missing {
                position: 2,
                character: '😀',
                codepoint: "U+1F600".into()
            }]
        );
        assert_eq!(p.bitmap.width(), 24);
        assert!(
            p.bitmap.get(9, 2) && p.bitmap.get(9, 13),
            "the box is drawn"
        );
    }

    #[test]
    fn the_svg_has_a_dot_per_lit_led_and_escapes_the_text() {
        let p = render("<A>", &class(192, 32, Charset::Utf8)).expect("drawn");
        let s = svg(&p);
        let lit: usize = (0..HEIGHT)
            .flat_map(|y| p.bitmap.runs(y))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(s.matches("r=\"0.45\"").count(), lit);
        assert!(s.contains("&lt;A&gt;") && !s.contains("<A>"));
    }

    #[test]
    fn the_licence_notice_travels_with_the_glyphs() {
        assert!(FONT_LICENCE.contains("SIL OPEN FONT LICENSE"));
        assert!(FONT_LICENCE.contains(UNIFONT_VERSION));
        assert!(FONT_LICENCE.contains("Roman Czyborra"));
        for note in [FONT_NOTICE_EN, FONT_NOTICE_ZH] {
            assert!(
                note.contains(UNIFONT_VERSION) && note.contains("1.1"),
                "{note}"
            );
        }
    }

    proptest! {
        #[test]
        fn the_bitmap_is_as_wide_as_its_glyphs(text in "[a-zA-Z0-9 讲文明树新风排队乘车，。！😀é]{1,40}") {
            prop_assume!(!text.trim().is_empty());
            let p = render(&text, &class(192, 32, Charset::Utf8)).expect("drawn");
            let sum: usize = text.chars().map(glyph_width).sum();
            prop_assert_eq!(p.bitmap.width(), sum);
            prop_assert_eq!(p.bitmap.stride(), sum.div_ceil(8));
            prop_assert_eq!(p.fits, sum <= 192);
            prop_assert_eq!(p.pass_s.is_some(), !p.fits);
            for y in 0..HEIGHT {
                let row = p.bitmap.row_hex(y);
                prop_assert_eq!(row.len(), 2 * p.bitmap.stride());
                let lit: usize = p.bitmap.runs(y).iter().map(|(_, n)| n).sum();
                let ones: u32 = (0..p.bitmap.stride())
                    .map(|i| u8::from_str_radix(&row[2 * i..2 * i + 2], 16).map_or(0, u8::count_ones))
                    .sum();
                prop_assert_eq!(lit, ones as usize);
            }
        }
    }
}
